"""The local stack: embedded Kafka, PostgreSQL, Spark Connect and the Dagster processes, the forking run
launcher, the pooled Dagster storage and `demo`. The top layer: only the CLI and the test fixtures import it,
and nothing in the library or the Dagster wiring imports it."""
