"""Clients of the external systems (Kafka, Spark, Dagster's webserver over GraphQL), free of Dagster: the library,
the local stack and the Dagster resources (`clickstream_dagster.resources`) all use these."""
