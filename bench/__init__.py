"""Benchmarks: `make bench` runs bench.checkout (earn and hold+capture over gRPC on PostgreSQL)."""
