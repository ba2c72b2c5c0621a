"""The Dagster wiring's software-defined assets and checks, one module per domain: each asset is its config, its
resources, one library call and its metadata."""
