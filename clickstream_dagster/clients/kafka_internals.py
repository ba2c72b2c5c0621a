"""The one door to kafka-python's internals, with the one check of its version.

The project uses kafka-python's public API (KafkaProducer, KafkaConsumer, KafkaAdminClient, TopicPartition,
`kafka.admin`, `kafka.errors`, the default partitioner) everywhere but in two places, each for a reason
measured in bench/HISTORY.md:

- writing: `producer.batches.BatchAppender` appends encoded records to the producer's own batches, many at a
  time, instead of `KafkaProducer.send()` per record (about 1.5 against 20-45 us of CPU a record): it needs
  `ProducerBatch`, `MemoryRecordsBuilder` and the record varint, and the accumulator's private attributes;
- reading: `ingestion.kafka_log` fetches raw record batches under read_uncommitted to tell why an offset
  carries no message (a marker, an aborted record, compaction), which no consumer says: it needs the Fetch
  request and response structs and `MemoryRecords`.

Both import those names from here, and only from here (tests/test_layers.py pins it). Importing this module
checks the installed version against the one those two were written and tested for, with what to do.
"""

from __future__ import annotations

from importlib.metadata import version

SUPPORTED_KAFKA_PYTHON = ("3.0.",)
INSTALLED_KAFKA_PYTHON = version("kafka-python")


def supported(installed: str = INSTALLED_KAFKA_PYTHON) -> bool:
    return installed.startswith(SUPPORTED_KAFKA_PYTHON)


if not supported():  # pragma: no cover - depends on the environment
    raise ImportError(
        "clickstream-dagster's producer and its ingestion's log reader use kafka-python internals written for "
        f"kafka-python {' / '.join(v + 'x' for v in SUPPORTED_KAFKA_PYTHON)}; found {INSTALLED_KAFKA_PYTHON}. "
        "Install the version pinned in pyproject.toml (`make setup`)."
    )

from kafka.producer.producer_batch import ProducerBatch  # noqa: E402
from kafka.protocol.old.fetch import FetchRequest_v4, FetchResponse_v4  # noqa: E402
from kafka.record.memory_records import MemoryRecords, MemoryRecordsBuilder  # noqa: E402
from kafka.record.util import encode_varint  # noqa: E402

__all__ = [
    "INSTALLED_KAFKA_PYTHON",
    "SUPPORTED_KAFKA_PYTHON",
    "FetchRequest_v4",
    "FetchResponse_v4",
    "MemoryRecords",
    "MemoryRecordsBuilder",
    "ProducerBatch",
    "encode_varint",
    "supported",
]
