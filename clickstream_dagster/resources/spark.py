"""Apache Spark: the one resource that hands out a pyspark session.

Local (`local[*]`) by default; a Spark Connect server when `remote` is set (SPARK_REMOTE, e.g.
`sc://spark-host:15002`), or a cluster master (`spark://host:7077`, `yarn`) through `master`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


class SparkResource(dg.ConfigurableResource):
    master: str = "local[*]"
    remote: str = ""
    app_name: str = "clickstream-dagster"
    shuffle_partitions: int = 8

    @property
    def endpoint(self) -> str:
        return self.remote or self.master

    def session(self) -> SparkSession:
        from pyspark.sql import SparkSession

        if self.remote:
            return SparkSession.builder.remote(self.remote).getOrCreate()
        return (
            SparkSession.builder.master(self.master)
            .appName(self.app_name)
            .config("spark.sql.shuffle.partitions", str(self.shuffle_partitions))
            .config("spark.ui.enabled", "false")
            .config("spark.sql.session.timeZone", "UTC")
            .getOrCreate()
        )
