"""Every query the recommendations API runs, in one place (read-only). Parameters are always bound (%s),
never formatted into the text. The tables come from migration 0003_recommendations.sql.

A model's serving rows (recommendations, similar_items, then popular_items) are written after it is
promoted, beside the rows of the version being served; popular_items comes last, so its rows (a few hundred
at most) mark "this version's rows are in place". That is checked there, never by scanning the large
recommendations table.
"""

# The promoted model (at most one, by a partial unique index), and whether its serving rows are loaded.
PROMOTED_MODEL = """
SELECT m.version,
       EXISTS (SELECT 1 FROM popular_items p WHERE p.model_version = m.version) AS ready
FROM model_registry m
WHERE m.status = 'promoted'
"""

# Whether a version still has serving rows (the one served before a promotion whose rows are not in yet).
VERSION_READY = "SELECT EXISTS (SELECT 1 FROM popular_items WHERE model_version = %s)"

# (itemid, score) of one visitor under one model version, best first: the primary key (model_version, visitorid, rank).
RECOMMENDATIONS = """
SELECT itemid, score
FROM recommendations
WHERE visitorid = %s AND model_version = %s
ORDER BY rank
LIMIT %s
"""

# The fallback lists of one model version: every `popular` row, then every `trending` row (the API merges
# them in that order without duplicates; both are at most a few hundred rows, cached per version).
POPULAR_ITEMS = """
SELECT list, itemid, score
FROM popular_items
WHERE model_version = %s
ORDER BY list = 'trending', rank
"""

# (similar_itemid, score) for one item under one model version, best first.
SIMILAR_ITEMS = """
SELECT similar_itemid, score
FROM similar_items
WHERE itemid = %s AND model_version = %s
ORDER BY rank
LIMIT %s
"""
