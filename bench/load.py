"""The load generator, run in its own process: closed-loop and open-loop drivers of signed gRPC calls.

Each call signs a fresh token over the exact bytes it sends, as a partner's till would, on a raw
``unary_unary`` callable (the pattern of sdk.client.CoalitionClient.call without its retries).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2
from loyalty.v1 import checkout_service_pb2 as pb

from bench.cpu import process_tree_cpu
from common.ids import new_id
from sdk.tokens import SigningKey, load_private_key, sign_request_token

CHECKOUT = "/loyalty.v1.CheckoutService/"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
DEADLINE_SECONDS = 5.0
OPEN_LOOP_THREADS = 64
CHANNELS = 4


@dataclass(frozen=True)
class LoadSpec:
    """``operation`` (empty, earn, hold_capture), closed loop at ``concurrency`` or open loop at a rate."""

    operation: str
    duration_seconds: float
    concurrency: int = 0
    rate_per_second: float = 0.0


@dataclass(frozen=True)
class Target:
    """Where and as whom to call; plain data so it crosses into a spawned process."""

    address: str
    server_pid: int
    partner_code: str
    key_id: str
    private_key_path: str
    member_numbers: tuple[str, ...]
    # Connections (one channel each): the kernel spreads connections, not calls, over server processes.
    channels: int = CHANNELS


@dataclass
class LoadResult:
    spec: LoadSpec
    latencies_seconds: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    elapsed_seconds: float = 0.0
    server_cpu_seconds: float = 0.0
    client_cpu_seconds: float = 0.0
    server_cpu_by_process: dict[int, float] = field(default_factory=dict)  # the parent and each worker

    @property
    def completed(self) -> int:
        return len(self.latencies_seconds)


class Caller:
    """Issues one benchmark operation; thread-safe (channels are, and each call builds its own token)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.private_key: SigningKey = load_private_key(target.private_key_path)
        self.channels = [
            grpc.insecure_channel(target.address, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(target.channels)
        ]

    def close(self) -> None:
        for channel in self.channels:
            channel.close()

    def operation(self, name: str) -> Callable[[], None]:
        return {"empty": self.empty, "earn": self.earn, "hold_capture": self.hold_capture}[name]

    def _channel(self) -> grpc.Channel:
        return random.choice(self.channels)

    def _member(self) -> pb.MemberIdentifier:
        return pb.MemberIdentifier(member_number=random.choice(self.target.member_numbers))

    def _call(self, rpc: str, request: Message, response_type: type[Message]) -> Any:
        method = CHECKOUT + rpc
        body = request.SerializeToString()
        token = sign_request_token(
            private_key=self.private_key, key_id=self.target.key_id, issuer=self.target.partner_code,
            audience="coalition", method=method, body=body,
        )  # fmt: skip
        stub = self._channel().unary_unary(
            method, request_serializer=_raw_bytes, response_deserializer=response_type.FromString
        )
        return stub(body, timeout=DEADLINE_SECONDS, metadata=(("authorization", f"Bearer {token}"),))

    def empty(self) -> None:
        stub = self._channel().unary_unary(
            HEALTH_CHECK,
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        stub(health_pb2.HealthCheckRequest(), timeout=DEADLINE_SECONDS)

    def earn(self) -> None:
        total_minor = random.randrange(500, 20_000)
        request = pb.EarnPointsRequest(
            request_id=new_id(), member=self._member(), receipt_id=f"R-{new_id()}",
            channel=pb.CHANNEL_IN_STORE, store_id="bench-01",
            basket=pb.Basket(currency_code="EUR", total_minor=total_minor),
        )  # fmt: skip
        self._call("EarnPoints", request, pb.EarnPointsResponse)

    def hold_capture(self) -> None:
        hold = self._call(
            "HoldPoints",
            pb.HoldPointsRequest(
                request_id=new_id(), member=self._member(), points=1, ttl_seconds=300, currency_code="EUR"
            ),
            pb.HoldPointsResponse,
        )
        hold_id = hold.hold.hold_id
        self._call("CaptureHold", pb.CaptureHoldRequest(request_id=new_id(), hold_id=hold_id),
                   pb.CaptureHoldResponse)  # fmt: skip


def _raw_bytes(body: bytes) -> bytes:
    return body


def run_load(target: Target, spec: LoadSpec, warmup_seconds: float = 1.0) -> LoadResult:
    """Warms up (unmeasured), then drives ``spec``; server CPU is read at the window's edges."""
    caller = Caller(target)
    try:
        operate = caller.operation(spec.operation)
        if warmup_seconds:
            _closed_loop(operate, LoadResult(spec), max(spec.concurrency, 4), warmup_seconds)
        result = LoadResult(spec)
        server_before, client_before = process_tree_cpu(target.server_pid), time.process_time()
        started = time.perf_counter()
        if spec.rate_per_second:
            _open_loop(operate, result, spec.rate_per_second, spec.duration_seconds)
        else:
            _closed_loop(operate, result, spec.concurrency, spec.duration_seconds)
        result.elapsed_seconds = time.perf_counter() - started
        server_after = process_tree_cpu(target.server_pid)
        result.server_cpu_by_process = {
            pid: seconds - server_before.get(pid, 0.0) for pid, seconds in server_after.items()
        }
        result.server_cpu_seconds = sum(result.server_cpu_by_process.values())
        result.client_cpu_seconds = time.process_time() - client_before
        return result
    finally:
        caller.close()


def _timed(operate: Callable[[], None], result: LoadResult, lock: threading.Lock, since: float) -> None:
    """Runs one operation and records its latency from ``since`` (its start or its scheduled time)."""
    code = "OK"
    try:
        operate()
    except grpc.RpcError as error:
        code = error.code().name
    except Exception as error:
        code = type(error).__name__
    latency = time.perf_counter() - since
    with lock:
        result.latencies_seconds.append(latency)
        if code != "OK":
            result.errors[code] += 1


def _closed_loop(operate: Callable[[], None], result: LoadResult, concurrency: int, duration_seconds: float) -> None:
    """``concurrency`` threads, each issuing its next call as soon as the previous one returns."""
    lock = threading.Lock()
    stop_at = time.perf_counter() + duration_seconds

    def worker() -> None:
        while time.perf_counter() < stop_at:
            _timed(operate, result, lock, time.perf_counter())

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _open_loop(
    operate: Callable[[], None], result: LoadResult, rate_per_second: float, duration_seconds: float
) -> None:
    """Arrivals on a fixed schedule; latency counts from the scheduled time, so a slow server can't hide
    queueing by slowing the sender down (no coordinated omission)."""
    lock = threading.Lock()
    interval = 1.0 / rate_per_second
    arrivals = int(duration_seconds * rate_per_second)
    started = time.perf_counter()
    with ThreadPoolExecutor(OPEN_LOOP_THREADS, thread_name_prefix="arrival") as pool:
        for index in range(arrivals):
            scheduled = started + index * interval
            delay = scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(_timed, operate, result, lock, scheduled)
