"""Analytics computed from the raw events: Spark jobs and the SQL that stores their results."""
