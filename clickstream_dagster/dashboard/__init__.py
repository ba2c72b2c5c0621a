"""The Streamlit dashboard's data access (`data`) and figures (`charts`); the page is `dashboards/app.py`.

Reads PostgreSQL only: the events database and Dagster's own storage. No Dagster import, no Kafka.
"""
