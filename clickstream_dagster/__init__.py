"""clickstream-dagster: an e-commerce clickstream platform (Kafka -> Dagster -> PostgreSQL, pyspark, LightFM).

Three layers, imported in one direction (docs/layout.md; enforced by `lint-imports`): the library (every
package but the two below: no Dagster, no local stack), the Dagster wiring (`definitions`, `assets`,
`sensors`, `resources`), and the local stack (`stack`, used by `cli` and the test fixtures only).
"""
