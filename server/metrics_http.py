"""Serves /metrics for Prometheus on its own port."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server


def start_metrics_server(address: str, registry: CollectorRegistry = REGISTRY) -> int:
    """Starts the exporter on ``host:port`` (port 0 picks one) and returns the port."""
    host, _, port = address.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host or "127.0.0.1", registry=registry)
    return int(server.server_port)
