"""The Streamlit dashboard's data and figures; the page is `dashboards/app.py`.

    sources          where it reads: the events database (`Database`, read-only pool) and Dagster's webserver
                     (the shared GraphQL client, `clients.dagster`)
    traffic          the "Live traffic" section's loaders
    pipeline_health  the "Pipeline health" section's loaders
    models           the "Models" and "Recommendation explorer" sections' loaders
    charts           the figures

No Dagster import, no Kafka.
"""
