-- The recommendation side: training data, a model registry with a promotion gate, and the serving tables
-- rebuilt from the promoted model. Epoch-millisecond columns end in _ts, as in clickstream_events.

-- One row per (visitor, item) and split of the time-based 70/15/15 protocol, after cleaning.
CREATE TABLE ml_interactions (
    split      text             NOT NULL CHECK (split IN ('train', 'validation', 'test')),
    visitorid  bigint           NOT NULL,
    itemid     bigint           NOT NULL,
    strength   double precision NOT NULL,   -- event-type weights with recency decay
    views      integer          NOT NULL,
    carts      integer          NOT NULL,
    purchases  integer          NOT NULL,
    first_ts   bigint           NOT NULL,
    last_ts    bigint           NOT NULL,
    PRIMARY KEY (split, visitorid, itemid)
);

-- Visitor behaviour over the cleaned events.
CREATE TABLE ml_visitor_features (
    visitorid       bigint           PRIMARY KEY,
    events          integer          NOT NULL,
    views           integer          NOT NULL,
    carts           integer          NOT NULL,
    purchases       integer          NOT NULL,
    sessions        integer          NOT NULL,
    distinct_items  integer          NOT NULL,
    active_days     integer          NOT NULL,
    active_hours    integer          NOT NULL,
    peak_hour       integer          NOT NULL,
    cart_rate       double precision NOT NULL,
    purchase_rate   double precision NOT NULL,
    recency_days    double precision NOT NULL,
    tenure_days     double precision NOT NULL,
    first_ts        bigint           NOT NULL,
    last_ts         bigint           NOT NULL
);

-- Item popularity and trend, with the catalogue features LightFM uses (category, ancestors, availability).
CREATE TABLE ml_item_features (
    itemid          bigint           PRIMARY KEY,
    events          integer          NOT NULL,
    views           integer          NOT NULL,
    carts           integer          NOT NULL,
    purchases       integer          NOT NULL,
    visitors        integer          NOT NULL,
    conversion      double precision NOT NULL,
    recent_events   integer          NOT NULL,
    earlier_events  integer          NOT NULL,
    trend           double precision NOT NULL,
    last_ts         bigint           NOT NULL,
    categoryid      bigint,
    category_path   bigint[],
    available       boolean
);

-- Time-of-day pattern (UTC) per event type.
CREATE TABLE ml_hourly_profile (
    hour    integer          NOT NULL CHECK (hour BETWEEN 0 AND 23),
    event   text             NOT NULL,
    events  bigint           NOT NULL,
    share   double precision NOT NULL,
    PRIMARY KEY (hour, event)
);

-- Every trained model, promoted or not. Rejected models stay, with the reason.
CREATE TABLE model_registry (
    version           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_type        text        NOT NULL,   -- lightfm
    params            jsonb       NOT NULL,   -- the chosen hyper-parameters and every ML setting
    data_window       jsonb       NOT NULL,   -- event-time bounds and sizes of train/validation/test
    cleaning          jsonb       NOT NULL,   -- rows removed by each cleaning step
    metrics           jsonb       NOT NULL,   -- {"validation": {...}, "test": {model: {...}}, "gate": {...}}
    library_versions  jsonb       NOT NULL,
    artefact          bytea       NOT NULL,   -- the pickled ModelBundle (trusted: written by this pipeline)
    artefact_sha256   text        NOT NULL,
    artefact_path     text,                   -- the models/*.pkl export
    status            text        NOT NULL DEFAULT 'candidate'
                      CHECK (status IN ('candidate', 'promoted', 'rejected', 'retired')),
    reason            text,                   -- why the gate promoted or rejected it
    dagster_run_id    text,
    trained_at        timestamptz NOT NULL DEFAULT now(),
    decided_at        timestamptz
);
-- At most one served model at a time.
CREATE UNIQUE INDEX model_registry_one_promoted ON model_registry (status) WHERE status = 'promoted';

-- The serving tables hold the rows of the served model and of the newly promoted one while it is written:
-- readers filter on one model_version, and popular_items is written last, so its rows mark a version as
-- complete. Older versions are pruned.

-- Top-N per active visitor from the promoted model; never an item the visitor bought.
CREATE TABLE recommendations (
    visitorid      bigint  NOT NULL,
    rank           integer NOT NULL,
    itemid         bigint  NOT NULL,
    score          real    NOT NULL,
    model_version  bigint  NOT NULL,
    PRIMARY KEY (model_version, visitorid, rank)
);

-- For every item of the promoted model: the most similar items by cosine of the item embeddings.
CREATE TABLE similar_items (
    itemid          bigint  NOT NULL,
    rank            integer NOT NULL,
    similar_itemid  bigint  NOT NULL,
    score           real    NOT NULL,
    model_version   bigint  NOT NULL,
    PRIMARY KEY (model_version, itemid, rank)
);

-- The fallback for unknown or cold visitors: `popular` (distinct visitors, last 30 days) and `trending`.
CREATE TABLE popular_items (
    list            text             NOT NULL CHECK (list IN ('popular', 'trending')),
    rank            integer          NOT NULL,
    itemid          bigint           NOT NULL,
    score           double precision NOT NULL,
    visitors        integer          NOT NULL,
    recent_events   integer          NOT NULL,
    earlier_events  integer          NOT NULL,
    trend           double precision NOT NULL,
    model_version   bigint           NOT NULL,
    computed_at     timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (model_version, list, rank)
);
