"""Replays RetailRocket events.csv into Kafka (`clickstream produce`)."""
