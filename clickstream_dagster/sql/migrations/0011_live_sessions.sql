-- The API's live sessions: a visitor's newest views and add-to-carts, and everything they bought, on every
-- recommendation request (sql/serving.py, VISITOR_ANSWER).
--
-- (visitorid, event) becomes (visitorid, event, "timestamp"): per visitor and event type the index is now in
-- event-time order, so "the newest N views" is a backward scan that stops after N entries, however long the
-- visitor's history, and "what they bought" stays one range (visitorid, 'transaction'). Every query the old
-- index served (a visitor's events, an event type's visitors) is served by the prefix. Replacing it rather
-- than adding a second visitor index keeps clickstream_events at the same number of indexes written per
-- loaded event (each costs several microseconds in random key order, bench/README.md).

CREATE INDEX clickstream_events_visitor_event_time_idx ON clickstream_events (visitorid, event, "timestamp");
DROP INDEX clickstream_events_visitor_event_idx;
