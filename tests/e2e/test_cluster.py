"""Scale-out on this machine: three replicas of the real server over one PostgreSQL, HAProxy in front and
Prometheus scraping them, started by deploy/cluster.py from deploy/'s own configuration files.

Skips when haproxy or prometheus is not installed, unless LOYALTY_TEST_REQUIRE_DEPLOY_TOOLS=1 (CI).
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import grpc
import pytest
from loyalty.v1 import checkout_service_pb2 as pb
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, text

from common.db import create_engine
from common.ids import new_id
from deploy.cluster import Cluster, ClusterSettings, Ports, find_tool
from sdk.client import CoalitionClient, Credentials, error_info
from sdk.tokens import SigningKey, load_private_key, sign_request_token
from tests.conftest import drop_postgres_database, fresh_postgres_database
from tests.invariants import assert_invariants

REQUIRE_DEPLOY_TOOLS = os.environ.get("LOYALTY_TEST_REQUIRE_DEPLOY_TOOLS") == "1"
REPLICAS = 3
PARTNER = "brightmart-stores"  # seeded by `coalition seed-demo`, earns in GBP
EARN = "/loyalty.v1.CheckoutService/EarnPoints"
LOAD_THREADS = 6


@dataclass
class Network:
    """The cluster and who calls it: the demo partner's signing key and a few enrolled members."""

    cluster: Cluster
    engine: Engine
    private_key: SigningKey
    member_numbers: list[str] = field(default_factory=list)

    def client(self, target: str | None = None, *, max_attempts: int = 3) -> CoalitionClient:
        credentials = Credentials(PARTNER, f"{PARTNER}-1", self.private_key)
        return CoalitionClient(target or self.cluster.balancer_address, credentials, max_attempts=max_attempts)


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    missing = [tool for tool in ("haproxy", "prometheus") if find_tool(tool) is None]
    if missing:
        message = f"{' and '.join(missing)} not installed (make deploy-tools)"
        if REQUIRE_DEPLOY_TOOLS:
            pytest.fail(message + " and LOYALTY_TEST_REQUIRE_DEPLOY_TOOLS=1", pytrace=False)
        pytest.skip(message)
    database_url = fresh_postgres_database()
    settings = ClusterSettings(
        replicas=REPLICAS, database_url=database_url, state_dir=tmp_path_factory.mktemp("cluster"),
        ports=Ports.free(REPLICAS), shutdown_grace_seconds=3.0, workers=8, log_level="WARNING",
    )  # fmt: skip
    cluster = Cluster(settings)
    engine = create_engine(database_url, pool_size=2)
    try:
        cluster.start()
        network = Network(cluster, engine, load_private_key(cluster.keys_dir / f"{PARTNER}.pem"))
        with network.client() as client:
            for number in range(8):
                network.member_numbers.append(
                    earn(client, f"ENROL-{number}", phone=f"+4477009{number:05d}").member_number
                )
        yield network
    finally:
        cluster.stop()
        engine.dispose()
        drop_postgres_database(database_url)


def earn_request(receipt_id: str, *, member_number: str = "", phone: str = "") -> pb.EarnPointsRequest:
    member = (
        pb.MemberIdentifier(member_number=member_number) if member_number else pb.MemberIdentifier(phone_number=phone)
    )
    return pb.EarnPointsRequest(
        request_id=new_id(), member=member, receipt_id=receipt_id, enroll_if_unknown=bool(phone),
        basket=pb.Basket(currency_code="GBP", total_minor=1_000), channel=pb.CHANNEL_IN_STORE, store_id="cluster-01",
    )  # fmt: skip


def earn(client: CoalitionClient, receipt_id: str, **member: str) -> pb.EarnPointsResponse:
    response: pb.EarnPointsResponse = client.checkout.EarnPoints(earn_request(receipt_id, **member))
    return response


def earn_counts(cluster: Cluster) -> list[float]:
    """EarnPoints calls each replica has served, from its own /metrics."""
    counts: list[float] = []
    for replica in cluster.replicas:
        with urllib.request.urlopen(replica.metrics_url, timeout=5) as response:
            families = text_string_to_metric_families(response.read().decode())
            counts.append(sum(
                sample.value for family in families for sample in family.samples
                if sample.name == "loyalty_rpc_duration_seconds_count"
                and sample.labels.get("method") == "CheckoutService/EarnPoints"
            ))  # fmt: skip
    return counts


def send_raw(target: str, body: bytes, token: str) -> bytes:
    """The exact bytes and token, no SDK: what an attacker who captured a call would send."""
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(EARN, request_serializer=lambda raw: raw, response_deserializer=lambda raw: raw)
        response: bytes = call(body, metadata=(("authorization", f"Bearer {token}"),), timeout=5)
        return response


def test_calls_spread_over_every_replica(network: Network) -> None:
    before = earn_counts(network.cluster)
    with network.client() as client:
        for number in range(60):
            earn(client, f"SPREAD-{number}", member_number=network.member_numbers[number % 8])
    served = [after - earlier for after, earlier in zip(earn_counts(network.cluster), before, strict=True)]
    assert sum(served) == 60
    # One client, one HTTP/2 connection: a TCP balancer would send all 60 to one replica.
    assert all(count >= 10 for count in served), served


def test_a_token_replayed_on_another_replica_is_rejected(network: Network) -> None:
    body = earn_request(f"REPLAY-{new_id()[:8]}", member_number=network.member_numbers[0]).SerializeToString()
    token = sign_request_token(
        private_key=network.private_key, key_id=f"{PARTNER}-1", issuer=PARTNER, audience="coalition",
        method=EARN, body=body,
    )  # fmt: skip
    first, second = network.cluster.replica(1), network.cluster.replica(2)
    assert pb.EarnPointsResponse.FromString(send_raw(first.address, body, token)).transaction_id
    with pytest.raises(grpc.RpcError) as replayed:
        send_raw(second.address, body, token)
    info = error_info(replayed.value)
    assert replayed.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert info is not None and info.reason == "TOKEN_REPLAYED"


def test_an_idempotent_retry_on_another_replica_returns_the_original_answer(network: Network) -> None:
    request = earn_request(f"RETRY-{new_id()[:8]}", member_number=network.member_numbers[1])
    with network.client(network.cluster.replica(2).address) as first, \
            network.client(network.cluster.replica(3).address) as second:  # fmt: skip
        original = first.checkout.EarnPoints(request)
        retried = second.checkout.EarnPoints(request)  # same request_id, a fresh token
    assert not original.idempotent_replay and retried.idempotent_replay
    assert retried.transaction_id == original.transaction_id != ""
    assert retried.points_earned == original.points_earned


def test_prometheus_sees_every_replica(network: Network) -> None:
    cluster = network.cluster
    replicas = {replica.name for replica in cluster.replicas}

    def reporting(query: str) -> set[str]:
        url = f"{cluster.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": query})
        with urllib.request.urlopen(url, timeout=5) as response:
            results = json.loads(response.read())["data"]["result"]
        return {result["metric"].get("replica", "") for result in results if float(result["value"][1]) > 0}

    deadline = time.monotonic() + 30  # scrapes every 10 s
    while True:
        up = reporting('up{job="coalition"} == 1')
        serving = reporting(
            'sum by (replica) (loyalty_rpc_duration_seconds_count{method="CheckoutService/EarnPoints"})'
        )
        if (up, serving) == (replicas, replicas) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert up == replicas
    assert serving == replicas


@dataclass
class Load:
    """Threads earning through HAProxy, each receipt once, each retried with its request_id as a till would."""

    network: Network
    prefix: str
    max_attempts: int = 3  # the SDK's retries of UNAVAILABLE; 1 shows what a client sees without them
    acknowledged: dict[str, str] = field(default_factory=dict)  # receipt -> transaction id
    failures: dict[str, str] = field(default_factory=dict)  # receipt -> last error
    requests: dict[str, pb.EarnPointsRequest] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        self._threads = [threading.Thread(target=self._work, args=(index,)) for index in range(LOAD_THREADS)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _work(self, index: int) -> None:
        with self.network.client(max_attempts=self.max_attempts) as client:
            number = 0
            while not self._stop.is_set():
                receipt = f"{self.prefix}-{index}-{number}"
                member = self.network.member_numbers[(index + number) % len(self.network.member_numbers)]
                request = earn_request(receipt, member_number=member)
                with self._lock:
                    self.requests[receipt] = request
                self.call(client, receipt, request)
                number += 1

    def call(self, client: CoalitionClient, receipt: str, request: pb.EarnPointsRequest) -> None:
        try:
            response = client.checkout.EarnPoints(request)  # the SDK retries UNAVAILABLE, same request_id
        except grpc.RpcError as error:
            info = error_info(error)
            with self._lock:
                self.failures[receipt] = f"{error.code().name} {info.reason if info else error.details()}"
            return
        with self._lock:
            self.acknowledged[receipt] = response.transaction_id
            self.failures.pop(receipt, None)

    def ask_again(self) -> None:
        """A till that saw an error asks again with the same request_id, and learns the outcome."""
        with self.network.client() as client:
            for receipt in list(self.failures):
                self.call(client, receipt, self.requests[receipt])

    def earned_in_database(self) -> dict[str, tuple[int, str]]:
        """receipt -> (earn transactions recorded, one of their ids) for every receipt this load sent."""
        with self.network.engine.connect() as connection:
            rows = connection.execute(
                text("SELECT receipt_id, COUNT(*), MIN(public_id) FROM journal_transactions"
                     " WHERE kind = 'EARN' AND receipt_id LIKE :prefix GROUP BY receipt_id"),
                {"prefix": f"{self.prefix}-%"},
            )  # fmt: skip
            return {str(receipt): (int(count), str(public_id)) for receipt, count, public_id in rows}


def assert_each_acknowledged_earn_recorded_once(load: Load) -> None:
    recorded = load.earned_in_database()
    assert all(count == 1 for count, _ in recorded.values()), "a receipt earned twice"
    assert set(recorded) <= set(load.requests)
    for receipt, transaction_id in load.acknowledged.items():
        assert recorded[receipt] == (1, transaction_id), receipt


def run_load_around(network: Network, prefix: str, disrupt: Callable[[], None], *, max_attempts: int = 3) -> Load:
    with Load(network, prefix, max_attempts) as load:
        time.sleep(1.5)
        disrupt()
        before = len(load.acknowledged)
        deadline = time.monotonic() + 10.0  # generous for a loaded CI machine; a healthy cluster needs < 1 s
        while len(load.acknowledged) <= before + 20 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(load.acknowledged) > before + 20, "the cluster stopped serving after one replica went away"
    return load


def bring_back(cluster: Cluster, number: int) -> None:
    if not cluster.replica(number).is_running:
        cluster.start_replica(number)


def test_a_replica_killed_under_load_loses_no_acknowledged_earn_and_duplicates_none(network: Network) -> None:
    cluster = network.cluster
    try:
        load = run_load_around(network, "KILL", lambda: cluster.kill_replica(2))
    finally:
        bring_back(cluster, 2)
    assert len(load.acknowledged) > 100
    assert_each_acknowledged_earn_recorded_once(load)
    # A call in flight on the killed replica may have failed after the replica wrote it; asked again
    # with the same request_id it gets the stored answer (or is done now), and nothing earns twice.
    load.ask_again()
    assert load.failures == {}
    assert_each_acknowledged_earn_recorded_once(load)
    assert set(load.earned_in_database()) == set(load.requests)
    assert_invariants(network.engine)


def test_a_replica_stopped_with_sigterm_drains_without_failed_calls(network: Network) -> None:
    cluster = network.cluster
    exit_codes: list[int] = []
    try:
        # No client retries: the drain itself (HAProxy stops routing to it, calls in flight finish) must
        # leave no call failed.
        load = run_load_around(network, "TERM", lambda: exit_codes.append(cluster.stop_replica(3)), max_attempts=1)
    finally:
        bring_back(cluster, 3)
    assert exit_codes == [0]
    assert load.failures == {}
    assert_each_acknowledged_earn_recorded_once(load)
    assert set(load.earned_in_database()) == set(load.requests)
    assert_invariants(network.engine)
    assert cluster.balancer_status() == {replica.name: "UP" for replica in cluster.replicas}
