-- +goose NO TRANSACTION
-- +goose Up
-- The operators' dashboard (docs/decisions/0017-ops-dashboard.md) shows
-- the latest status changes of every order, and on start-up reads back the
-- orders placed over its chart's window: both walk the feed by time, which
-- no index served. CONCURRENTLY, outside a transaction, so that a live
-- service keeps storing statuses while it builds.
CREATE INDEX CONCURRENTLY IF NOT EXISTS status_feed_at ON status_feed (at);

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS status_feed_at;
