"""The pipeline's Prometheus metrics (monitoring/exporter.py), served by `python -m clickstream_dagster.monitoring`
(which `clickstream up` starts); alert rules and a Grafana dashboard live in prometheus/ at the repository root."""
