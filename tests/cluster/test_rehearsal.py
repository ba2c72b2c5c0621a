"""The whole stack on the scale rehearsal (`clickstream cluster up`: 3 Kafka brokers with replication factor
3 and min.insync.replicas 2, a Spark standalone master with 2 workers behind Spark Connect), reached through
KAFKA_BOOTSTRAP_SERVERS and SPARK_REMOTE only, as any external cluster. scripts/test.sh starts the rehearsal,
runs `pytest -m "cluster or rehearsal"` with its environment, and stops it.

Every test ends with the recount of tests/stack/test_faults.py: the messages a plain read_committed consumer
gets from the topic, once each, stored or quarantined; windowed_stats and event_statistics (computed on the
Spark cluster) against plain SQL."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from clickstream_dagster.stack.cluster import BROKERS, PARTITIONS, ClusterRehearsal, cluster_dir_from_env
from clickstream_dagster.stack.manager import Stack
from clickstream_dagster.stack.process import pid_alive
from tests.conftest import make_test_config, running_stack
from tests.stack.test_faults import _caught_up, _produce, _recount, _stored_now, _wait_for_loading

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture(scope="module")
def rehearsal() -> ClusterRehearsal:
    folder = cluster_dir_from_env()
    assert folder is not None, (
        "the cluster tests run against the scale rehearsal: `clickstream cluster up`, then "
        'eval "$(clickstream cluster env)" (scripts/test.sh does both)'
    )
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
    assert len(bootstrap.split(",")) == BROKERS and os.environ.get("SPARK_REMOTE")
    cfg = make_test_config(
        folder.parent / "unused"
    )  # only its host and folders: the rehearsal's own are kept
    rehearsal = ClusterRehearsal(cfg.with_data_dir(folder.parent, cfg.ports))
    assert rehearsal.bootstrap_servers == bootstrap, "CLICKSTREAM_CLUSTER_DIR and the endpoints disagree"
    return rehearsal


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, rehearsal: ClusterRehearsal) -> Iterator[Stack]:
    cfg = make_test_config(tmp_path_factory.mktemp("on-cluster") / "data")  # the environment: the rehearsal
    assert cfg.external_kafka and cfg.external_spark_remote
    with running_stack(cfg) as stack:
        yield stack


def test_the_topic_is_replicated_three_times_with_two_in_sync(stack: Stack) -> None:
    admin = AdminClient({"bootstrap.servers": stack.cfg.bootstrap_servers})
    topic = admin.list_topics(stack.cfg.topic, timeout=10).topics[stack.cfg.topic]
    assert len(topic.partitions) == PARTITIONS
    assert {len(p.replicas) for p in topic.partitions.values()} == {3}
    assert {len(p.isrs) for p in topic.partitions.values()} == {3}
    assert len({p.leader for p in topic.partitions.values()}) == BROKERS  # leadership spread over the brokers
    resource = ConfigResource(ConfigResource.Type.TOPIC, stack.cfg.topic)
    configs = admin.describe_configs([resource])[resource].result(timeout=10)
    assert configs["min.insync.replicas"].value == "2"


def test_replay_and_windows_are_exact_on_the_cluster(stack: Stack) -> None:
    _produce(stack.cfg, 20_000)
    _caught_up(stack)
    assert _recount(stack) == 20_000


def test_a_broker_killed_during_ingestion_loses_nothing(stack: Stack, rehearsal: ClusterRehearsal) -> None:
    before = _recount(stack)
    _produce(stack.cfg, 40_000)
    _wait_for_loading(stack.cfg, above=before + 2_000)  # runs are reading
    victim = rehearsal.brokers[1]
    pid = victim.proc.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(pid)
    try:
        # With one broker of three down, producing (acks=all, 2 in sync) and ingesting carry on.
        _produce(stack.cfg, 10_000)
        _caught_up(stack)
        assert _stored_now(stack.cfg) > before
        assert _recount(stack) == before + 50_000
    finally:
        victim.start()  # back in the cluster for what follows
    assert victim.healthy()
