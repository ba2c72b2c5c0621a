-- Sessions, the view -> cart -> purchase funnel, cart abandonment and retention, kept exact and incremental
-- (analytics/sessions/). A loading transaction queues, per visitor it added events for, the event-time span
-- of those events in `session_changes`; the sessions step takes what is queued and recomputes, from the
-- stored events, only the sessions those spans can touch, then adds to every aggregate below the difference
-- between the sessions it removed and those it wrote. Times are epoch milliseconds, as in "timestamp".

-- One row per visitor session: the visitor's events with gaps of at most the session gap in event time.
CREATE TABLE sessions (
    visitorid       bigint      NOT NULL,
    start_ms        bigint      NOT NULL,
    end_ms          bigint      NOT NULL,
    session_start   timestamptz NOT NULL,
    session_end     timestamptz NOT NULL,
    duration_ms     bigint      NOT NULL,
    events          integer     NOT NULL,
    views           integer     NOT NULL,
    addtocarts      integer     NOT NULL,
    transactions    integer     NOT NULL,
    distinct_items  integer     NOT NULL,
    entry_itemid    bigint      NOT NULL,
    exit_itemid     bigint      NOT NULL,
    bounced         boolean     NOT NULL,   -- exactly one event
    converted       boolean     NOT NULL,   -- at least one transaction
    cart_abandoned  boolean     NOT NULL,   -- an add-to-cart and no transaction
    PRIMARY KEY (visitorid, start_ms)
);
-- Sessions over time (the dashboard, a period's median).
CREATE INDEX sessions_start_idx ON sessions (session_start);

-- What each session did with each item (flags: 1 viewed, 2 added to cart, 4 bought), and the item's category
-- when the session was computed (NULL: unknown), so a session removed later subtracts exactly what it added.
CREATE TABLE session_items (
    visitorid   bigint   NOT NULL,
    start_ms    bigint   NOT NULL,
    itemid      bigint   NOT NULL,
    categoryid  bigint,
    flags       smallint NOT NULL,
    PRIMARY KEY (visitorid, start_ms, itemid)
);

-- The queue: per loading transaction and visitor, the event-time span of the events it added (one row per
-- run of events closer than the session gap). The sessions step deletes what it takes in its transaction.
CREATE TABLE session_changes (
    visitorid  bigint      NOT NULL,
    first_ms   bigint      NOT NULL,
    last_ms    bigint      NOT NULL,
    queued_at  timestamptz NOT NULL DEFAULT now()   -- the loading transaction's start (the exporter's freshness)
);

-- The gap the stored sessions were cut with; the sessions step rebuilds everything when it changes.
CREATE TABLE session_settings (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    gap_ms  bigint  NOT NULL
);

-- The sessions' totals, kept with them (the checks compare them with the loading transaction's event_totals).
CREATE TABLE session_totals (
    one       boolean PRIMARY KEY DEFAULT true CHECK (one),
    sessions  bigint  NOT NULL,
    events    bigint  NOT NULL
);
INSERT INTO session_totals VALUES (true, 0, 0);

-- Per hour and per day of session start (grain 'hour' | 'day'), per combination of funnel flags (bit_or of
-- the session's events: 1 viewed, 2 added to cart, 4 bought): the sessions, the bounced sessions, and the
-- visitors whose sessions of that period together have exactly these flags. Every funnel figure is a sum over
-- combinations (the views `funnel_hourly` / `funnel_daily`).
CREATE TABLE funnel_counts (
    grain         text        NOT NULL,
    period_start  timestamptz NOT NULL,
    flags         smallint    NOT NULL,
    sessions      bigint      NOT NULL,
    bounced       bigint      NOT NULL,
    visitors      bigint      NOT NULL,
    PRIMARY KEY (grain, period_start, flags)
);

-- Session lengths per hour of session start, as a histogram (exact medians for any set of hours).
CREATE TABLE session_lengths (
    hour_start   timestamptz NOT NULL,
    duration_ms  bigint      NOT NULL,
    sessions     bigint      NOT NULL,
    PRIMARY KEY (hour_start, duration_ms)
);

-- The funnel per item and per category (categoryid -1: unknown), over all time, by flag combination: the
-- sessions that did exactly these things with the item (with any item of the category), and the visitors.
CREATE TABLE item_funnel_counts (
    itemid    bigint   NOT NULL,
    flags     smallint NOT NULL,
    sessions  bigint   NOT NULL,
    visitors  bigint   NOT NULL,
    PRIMARY KEY (itemid, flags)
);
CREATE TABLE category_funnel_counts (
    categoryid  bigint   NOT NULL,
    flags       smallint NOT NULL,
    sessions    bigint   NOT NULL,
    visitors    bigint   NOT NULL,
    PRIMARY KEY (categoryid, flags)
);

-- Retention: each visitor's sessions per week (Monday, UTC) of session start, and per cohort (the week a
-- visitor was first seen) the visitors active N weeks after it, and the cohort's sessions (returning: every
-- session of a visitor but their first).
CREATE TABLE visitor_weeks (
    visitorid   bigint  NOT NULL,
    week_start  date    NOT NULL,
    sessions    integer NOT NULL,
    PRIMARY KEY (visitorid, week_start)
);
CREATE TABLE retention_counts (
    cohort_week  date    NOT NULL,
    weeks_after  integer NOT NULL,
    visitors     bigint  NOT NULL,
    PRIMARY KEY (cohort_week, weeks_after)
);
CREATE TABLE cohort_sessions (
    cohort_week         date   PRIMARY KEY,
    sessions            bigint NOT NULL,
    returning_sessions  bigint NOT NULL
);

-- Events loaded before this migration: every visitor's whole span, so the first sessions step builds them.
INSERT INTO session_changes (visitorid, first_ms, last_ms)
SELECT visitorid, min("timestamp"), max("timestamp") FROM clickstream_events GROUP BY visitorid;

-- ---- the figures, as views over the counts (docs/analytics.md defines each one) ------------------------
-- Funnel steps are nested within one session (or one visitor and period): view -> cart counts the sessions
-- that viewed and added to cart, cart -> purchase those that added to cart and bought, view -> purchase those
-- that viewed and bought. A rate is NULL where its denominator is 0.
CREATE VIEW funnel AS
SELECT c.grain, c.period_start, f.*,
       f.sessions_viewed_carted::float8 / nullif(f.sessions_viewed, 0)  AS view_to_cart_rate,
       f.sessions_carted_bought::float8 / nullif(f.sessions_carted, 0)  AS cart_to_purchase_rate,
       f.sessions_viewed_bought::float8 / nullif(f.sessions_viewed, 0)  AS view_to_purchase_rate,
       f.bounced_sessions::float8 / nullif(f.sessions, 0)               AS bounce_rate,
       f.abandoned_sessions::float8 / nullif(f.sessions_carted, 0)      AS cart_abandonment_rate,
       m.median_ms                                                      AS median_session_ms
FROM (SELECT DISTINCT grain, period_start FROM funnel_counts) c
CROSS JOIN LATERAL (
    SELECT sum(sessions)                                        AS sessions,
           sum(bounced)                                         AS bounced_sessions,
           coalesce(sum(sessions) FILTER (WHERE flags & 1 = 1), 0) AS sessions_viewed,
           coalesce(sum(sessions) FILTER (WHERE flags & 2 = 2), 0) AS sessions_carted,
           coalesce(sum(sessions) FILTER (WHERE flags & 4 = 4), 0) AS sessions_bought,
           coalesce(sum(sessions) FILTER (WHERE flags & 3 = 3), 0) AS sessions_viewed_carted,
           coalesce(sum(sessions) FILTER (WHERE flags & 6 = 6), 0) AS sessions_carted_bought,
           coalesce(sum(sessions) FILTER (WHERE flags & 5 = 5), 0) AS sessions_viewed_bought,
           coalesce(sum(sessions) FILTER (WHERE flags = 7), 0)     AS sessions_all_steps,
           coalesce(sum(sessions) FILTER (WHERE flags & 6 = 2), 0) AS abandoned_sessions,
           sum(visitors)                                        AS visitors,
           coalesce(sum(visitors) FILTER (WHERE flags & 1 = 1), 0) AS visitors_viewed,
           coalesce(sum(visitors) FILTER (WHERE flags & 2 = 2), 0) AS visitors_carted,
           coalesce(sum(visitors) FILTER (WHERE flags & 4 = 4), 0) AS visitors_bought,
           coalesce(sum(visitors) FILTER (WHERE flags & 3 = 3), 0) AS visitors_viewed_carted,
           coalesce(sum(visitors) FILTER (WHERE flags & 6 = 6), 0) AS visitors_carted_bought,
           coalesce(sum(visitors) FILTER (WHERE flags & 5 = 5), 0) AS visitors_viewed_bought,
           coalesce(sum(visitors) FILTER (WHERE flags = 7), 0)     AS visitors_all_steps
    FROM funnel_counts WHERE grain = c.grain AND period_start = c.period_start
) f
CROSS JOIN LATERAL (
    -- the median of the period's session lengths, from its hours' histograms (mean of the two middle ones)
    SELECT (min(duration_ms) FILTER (WHERE cum >= floor((total + 1) / 2))
          + min(duration_ms) FILTER (WHERE cum >= floor(total / 2) + 1)) / 2.0 AS median_ms
    FROM (
        SELECT duration_ms, sum(n) OVER (ORDER BY duration_ms) AS cum, sum(n) OVER () AS total
        FROM (
            SELECT duration_ms, sum(sessions) AS n FROM session_lengths
            WHERE hour_start >= c.period_start
              AND hour_start < c.period_start + CASE c.grain WHEN 'day' THEN interval '1 day' ELSE interval '1 hour' END
            GROUP BY duration_ms
        ) g
    ) h
) m;

-- Per item and per category, over all time: the same steps, sessions and visitors.
CREATE VIEW item_funnel AS
SELECT itemid,
       coalesce(sum(sessions) FILTER (WHERE flags & 1 = 1), 0) AS sessions_viewed,
       coalesce(sum(sessions) FILTER (WHERE flags & 2 = 2), 0) AS sessions_carted,
       coalesce(sum(sessions) FILTER (WHERE flags & 4 = 4), 0) AS sessions_bought,
       coalesce(sum(sessions) FILTER (WHERE flags & 3 = 3), 0) AS sessions_viewed_carted,
       coalesce(sum(sessions) FILTER (WHERE flags & 6 = 6), 0) AS sessions_carted_bought,
       coalesce(sum(sessions) FILTER (WHERE flags & 5 = 5), 0) AS sessions_viewed_bought,
       coalesce(sum(visitors) FILTER (WHERE flags & 1 = 1), 0) AS visitors_viewed,
       coalesce(sum(visitors) FILTER (WHERE flags & 2 = 2), 0) AS visitors_carted,
       coalesce(sum(visitors) FILTER (WHERE flags & 4 = 4), 0) AS visitors_bought,
       (coalesce(sum(sessions) FILTER (WHERE flags & 5 = 5), 0))::float8
           / nullif(coalesce(sum(sessions) FILTER (WHERE flags & 1 = 1), 0), 0) AS view_to_purchase_rate
FROM item_funnel_counts GROUP BY itemid;

CREATE VIEW category_funnel AS
SELECT categoryid,
       coalesce(sum(sessions) FILTER (WHERE flags & 1 = 1), 0) AS sessions_viewed,
       coalesce(sum(sessions) FILTER (WHERE flags & 2 = 2), 0) AS sessions_carted,
       coalesce(sum(sessions) FILTER (WHERE flags & 4 = 4), 0) AS sessions_bought,
       coalesce(sum(sessions) FILTER (WHERE flags & 3 = 3), 0) AS sessions_viewed_carted,
       coalesce(sum(sessions) FILTER (WHERE flags & 6 = 6), 0) AS sessions_carted_bought,
       coalesce(sum(sessions) FILTER (WHERE flags & 5 = 5), 0) AS sessions_viewed_bought,
       coalesce(sum(visitors) FILTER (WHERE flags & 1 = 1), 0) AS visitors_viewed,
       coalesce(sum(visitors) FILTER (WHERE flags & 2 = 2), 0) AS visitors_carted,
       coalesce(sum(visitors) FILTER (WHERE flags & 4 = 4), 0) AS visitors_bought,
       (coalesce(sum(sessions) FILTER (WHERE flags & 5 = 5), 0))::float8
           / nullif(coalesce(sum(sessions) FILTER (WHERE flags & 1 = 1), 0), 0) AS view_to_purchase_rate
FROM category_funnel_counts GROUP BY categoryid;

-- Weekly cohorts: the share of each cohort active N weeks after its first week, and its returning sessions.
CREATE VIEW retention AS
SELECT r.cohort_week, r.weeks_after, r.visitors, c.visitors AS cohort_visitors,
       r.visitors::float8 / c.visitors AS active_share
FROM retention_counts r JOIN retention_counts c ON c.cohort_week = r.cohort_week AND c.weeks_after = 0;

CREATE VIEW cohorts AS
SELECT c.cohort_week, c.visitors, s.sessions, s.returning_sessions,
       s.returning_sessions::float8 / nullif(s.sessions, 0) AS returning_share
FROM retention_counts c JOIN cohort_sessions s USING (cohort_week)
WHERE c.weeks_after = 0;
