// Package outbox publishes events with the transactional-outbox pattern: Add
// writes an event in the caller's transaction, next to the state change it
// describes, and a Relay publishes committed events to RabbitMQ, deleting each
// only after the broker confirmed it. Delivery is at-least-once; events
// of one aggregate are published in the order they were written.
package outbox

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"

	"github.com/orderly/orderly/pkg/telemetry"
	eventsv1 "github.com/orderly/orderly/proto/orderly/events/v1"
)

// Partitions is how many lanes the outbox is split into, by a hash of the
// aggregate id. A relay replica owns whole partitions, so events of one
// aggregate are only ever published by one relay at a time. Changing it
// moves aggregates between partitions: drain the outbox first.
const Partitions = 32

// Event is one message to publish.
type Event struct {
	ID          uuid.UUID // the AMQP message_id; generated (version 7) when zero
	Exchange    string
	RoutingKey  string
	Type        string // the AMQP type: the payload's protobuf full name
	AggregateID string // e.g. the order id; events of one aggregate stay in order
	Payload     []byte
}

// NewEvent marshals msg into an Event of aggregateID, on the exchange and
// routing key the contract gives msg's type (eventsv1.RouteOf): the one
// table of routes decides where every event goes, so no service spells an
// exchange or a key out. It fails if msg is not a published message of the
// contract or cannot be marshaled.
func NewEvent(aggregateID string, msg proto.Message) (Event, error) {
	r, ok := eventsv1.RouteOf(msg)
	if !ok {
		return Event{}, fmt.Errorf("outbox: %T is not a published message (eventsv1.Routes)", msg)
	}
	b, err := proto.Marshal(msg)
	if err != nil {
		return Event{}, fmt.Errorf("outbox: marshal %T: %w", msg, err)
	}
	return Event{
		ID:          newID(),
		Exchange:    r.Exchange,
		RoutingKey:  r.RoutingKey,
		Type:        r.Type,
		AggregateID: aggregateID,
		Payload:     b,
	}, nil
}

// newID returns a time-ordered (version 7) event id. Consumers record
// message ids in their inbox's primary key; ids that grow with time are
// inserted at the end of its index, where random ones would scatter over
// every page of an index that grows with seven days of messages.
func newID() uuid.UUID {
	id, err := uuid.NewV7()
	if err != nil {
		return uuid.New() // the clock or randomness failed: any unique id will do
	}
	return id
}

// Partition is the outbox partition of an aggregate.
func Partition(aggregateID string) int16 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(aggregateID))
	return int16(h.Sum32() % Partitions)
}

// Add writes events in tx; they are published once tx commits and never if
// it rolls back. The trace context of ctx travels with each event, so the
// consumer's span joins the trace of the request that caused it.
func Add(ctx context.Context, tx pgx.Tx, events ...Event) error {
	q, args, err := insert(ctx, events)
	if err != nil || q == "" {
		return err
	}
	if _, err := tx.Exec(ctx, q, args...); err != nil {
		return fmt.Errorf("outbox: insert: %w", err)
	}
	return nil
}

// Queue is Add for a batch of statements: it queues the insert of events on
// b, which the caller sends in its transaction (pgx.Tx.SendBatch) along
// with the state change, in one round trip.
func Queue(ctx context.Context, b *pgx.Batch, events ...Event) error {
	q, args, err := insert(ctx, events)
	if err != nil || q == "" {
		return err
	}
	b.Queue(q, args...)
	return nil
}

// insert returns the statement that writes events, with its arguments,
// or "" for no events.
func insert(ctx context.Context, events []Event) (string, []any, error) {
	if len(events) == 0 {
		return "", nil, nil
	}
	carrier := map[string]string{}
	telemetry.InjectMap(ctx, carrier)
	headers, err := json.Marshal(carrier)
	if err != nil {
		return "", nil, fmt.Errorf("outbox: headers: %w", err)
	}
	const q = `
INSERT INTO outbox (event_id, exchange, routing_key, event_type, aggregate_id, partition, payload, headers)
SELECT e.*, $8::jsonb
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::smallint[], $7::bytea[]) AS e`
	n := len(events)
	ids, exchanges, keys, types, aggs := make([]uuid.UUID, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	parts, payloads := make([]int16, n), make([][]byte, n)
	for i, e := range events {
		if e.ID == uuid.Nil {
			e.ID = newID()
		}
		if e.Exchange == "" || e.RoutingKey == "" || e.Type == "" || e.AggregateID == "" {
			return "", nil, fmt.Errorf("outbox: event %d lacks exchange, routing key, type or aggregate id", i)
		}
		ids[i], exchanges[i], keys[i], types[i], aggs[i] = e.ID, e.Exchange, e.RoutingKey, e.Type, e.AggregateID
		parts[i], payloads[i] = Partition(e.AggregateID), e.Payload
	}
	return q, []any{ids, exchanges, keys, types, aggs, parts, payloads, headers}, nil
}
