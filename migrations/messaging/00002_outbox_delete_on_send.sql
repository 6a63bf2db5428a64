-- +goose Up
-- The relay deletes an event once the broker confirmed it instead of marking
-- it sent: the table then holds only what waits to be published, so the
-- relay's fetch and the metrics read a few rows however long the system has
-- run (docs/decisions/0009-throughput.md). The broker and the consumers keep
-- the record of what was sent; a consumer's inbox remembers what it applied.
-- Relays of the previous release fail on the dropped column and restart in a
-- loop until they are replaced: stop them before (or while) this rolls out.
DELETE FROM outbox WHERE sent_at IS NOT NULL;
DROP INDEX outbox_unsent;
ALTER TABLE outbox DROP COLUMN sent_at;
-- A queue table: rows live for milliseconds, so vacuum it by the number of
-- dead rows, not by a share of a table that is nearly always empty. (Where
-- autovacuum is off, pg.Vacuumer does the same from the service.)
ALTER TABLE outbox SET (autovacuum_vacuum_threshold = 1000, autovacuum_vacuum_scale_factor = 0,
                        autovacuum_analyze_threshold = 1000, autovacuum_analyze_scale_factor = 0);

-- The purge walks processed_at in insertion order: a BRIN index is enough
-- for that and costs next to nothing per insert, where the btree cost one
-- more index insert per handled message.
DROP INDEX inbox_processed;
CREATE INDEX inbox_processed ON inbox USING brin (processed_at);

-- +goose Down
DROP INDEX inbox_processed;
CREATE INDEX inbox_processed ON inbox (processed_at);
ALTER TABLE outbox RESET (autovacuum_vacuum_threshold, autovacuum_vacuum_scale_factor,
                          autovacuum_analyze_threshold, autovacuum_analyze_scale_factor);
ALTER TABLE outbox ADD COLUMN sent_at timestamptz;
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;
