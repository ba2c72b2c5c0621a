"""Apache Spark: the resource's settings build the library's `SparkClient`, one session per run.

`remote` is a Spark Connect URL (SPARK_REMOTE, e.g. `sc://127.0.0.1:15002`, which `clickstream up` starts):
a run then connects in under a second instead of starting a JVM. Without it, a local session (`local[*]`) or
a cluster master (`spark://host:7077`, `yarn`) through `master`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg
from pydantic import PrivateAttr

from clickstream_dagster.clients.spark import SparkClient

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


class SparkResource(dg.ConfigurableResource):
    master: str = "local[*]"
    remote: str = ""
    app_name: str = "clickstream-dagster"
    # Per-run inputs are small: few shuffle partitions are fastest (adaptive execution merges them further).
    shuffle_partitions: int = 4
    # Comma-separated jars for a local/cluster session; empty = the PostgreSQL JDBC driver from the cache.
    jars: str = ""

    _client: SparkClient | None = PrivateAttr(default=None)

    @property
    def endpoint(self) -> str:
        return self.remote or self.master

    def get_client(self) -> SparkClient:
        """This resource's client (and so its one session), created on first use."""
        if self._client is None:
            self._client = SparkClient(
                master=self.master,
                remote=self.remote,
                app_name=self.app_name,
                shuffle_partitions=self.shuffle_partitions,
                jars=self.jars,
            )
        return self._client

    def session(self) -> SparkSession:
        return self.get_client().session()

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """With Spark Connect, the session opens in the background as the run starts (see SparkClient)."""
        self.get_client().warm_up_in_background()

    def stop(self) -> None:
        if self._client is not None:
            self._client.stop()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.stop()
