"""The Dagster wiring's sensors: the Kafka offset sensor that launches ingestion runs over exact ranges, the sweeper
of loaded events no run is left to apply to sessions, and the run-failure alerts."""
