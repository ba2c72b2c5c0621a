"""The Streamlit dashboard's data access (`data`) and figures (`charts`); the page is `dashboards/app.py`.

Reads the events database (PostgreSQL) and Dagster's webserver through its public GraphQL API (plain HTTP).
No Dagster import, no Kafka.
"""
