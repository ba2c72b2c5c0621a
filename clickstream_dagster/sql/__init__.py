"""PostgreSQL: the migrations (the only place tables are created), the queries of each feature in one place,
and the binary COPY helper."""
