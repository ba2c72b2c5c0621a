-- Every candidate of a training run is registered with its evidence (#18): the best one (selected) with its
-- artefact, the others, outranked on validation, without one.
ALTER TABLE model_registry
    ALTER COLUMN artefact DROP NOT NULL,
    ALTER COLUMN artefact_sha256 DROP NOT NULL,
    ADD COLUMN selected boolean NOT NULL DEFAULT true;

-- A promoted model always has its artefact.
ALTER TABLE model_registry
    ADD CONSTRAINT model_registry_promoted_has_artefact
    CHECK (status NOT IN ('candidate', 'promoted') OR artefact IS NOT NULL);

COMMENT ON COLUMN model_registry.model_type IS 'popularity, item_knn, user_knn, session_knn or lightfm';
