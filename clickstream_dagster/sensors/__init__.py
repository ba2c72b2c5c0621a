"""The Dagster wiring's sensors: the Kafka offset sensor that launches ingestion runs over exact ranges, and the
run-failure alerts."""
