package rabbit

import (
	"context"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// DeadLetter is a message sitting in a dead-letter queue.
type DeadLetter struct {
	MessageID   string
	Type        string
	ContentType string
	Queue       string // the queue it failed in, where replay sends it
	Reason      string
	Timestamp   time.Time
	Headers     amqp.Table
	Body        []byte
}

func deadLetterOf(d *amqp.Delivery, queue string) DeadLetter {
	reason, _ := d.Headers[HeaderError].(string)
	if reason == "" {
		// Dead-lettered by the broker itself (delivery limit reached).
		if r, ok := d.Headers["x-first-death-reason"].(string); ok {
			reason = "broker: " + r
		}
	}
	from, _ := d.Headers[HeaderQueue].(string)
	if from == "" {
		from = queue
	}
	return DeadLetter{MessageID: d.MessageId, Type: d.Type, ContentType: d.ContentType, Queue: from,
		Reason: reason, Timestamp: d.Timestamp, Headers: d.Headers, Body: d.Body}
}

// ListDeadLetters returns up to limit messages of queue's DLQ without removing
// them: they are taken unacknowledged and returned when the channel closes.
func (c *Conn) ListDeadLetters(ctx context.Context, queue string, limit int) ([]DeadLetter, error) {
	ch, _, err := c.Channel(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { _ = ch.Close() }()
	var out []DeadLetter
	for len(out) < limit {
		d, ok, err := ch.Get(DLQName(queue), false)
		if err != nil {
			return out, fmt.Errorf("rabbit: read %s: %w", DLQName(queue), err)
		}
		if !ok {
			break
		}
		out = append(out, deadLetterOf(&d, queue))
	}
	return out, nil
}

// FindDeadLetter returns the first message of queue's DLQ whose message id is
// id, without removing anything: like ListDeadLetters it reads unacknowledged
// and the broker takes every message back when the channel closes, but it
// stops at the match instead of reading the whole DLQ. It returns false when
// no message has that id, and an error when the DLQ cannot be read (an
// *amqp.Error with code 404 when it does not exist).
func (c *Conn) FindDeadLetter(ctx context.Context, queue, id string) (DeadLetter, bool, error) {
	ch, _, err := c.Channel(ctx)
	if err != nil {
		return DeadLetter{}, false, err
	}
	defer func() { _ = ch.Close() }()
	for ctx.Err() == nil {
		d, ok, err := ch.Get(DLQName(queue), false)
		if err != nil {
			return DeadLetter{}, false, fmt.Errorf("rabbit: read %s: %w", DLQName(queue), err)
		}
		if !ok {
			return DeadLetter{}, false, nil
		}
		if d.MessageId == id {
			return deadLetterOf(&d, queue), true, nil
		}
	}
	return DeadLetter{}, false, ctx.Err()
}

// ReplayDeadLetters moves the dead letters of queue that match (all when
// match is nil) back into the queue they failed in, with their retry count
// reset. Each is removed from the DLQ only after the broker confirmed its
// republication. It looks at each message once per call, so a message that
// fails again is not replayed in a loop. It returns how many
// were replayed.
func (c *Conn) ReplayDeadLetters(ctx context.Context, queue string, match func(DeadLetter) bool) (int, error) {
	ch, _, err := c.Channel(ctx)
	if err != nil {
		return 0, err
	}
	defer func() { _ = ch.Close() }()
	pub := c.NewPublisher()
	defer func() { _ = pub.Close() }()
	// Messages looked at stay unacknowledged on this channel until it closes,
	// so each Get returns a new one; a replayed message that fails again
	// comes back with the same id, which ends the pass.
	seen := map[string]bool{}
	replayed := 0
	for {
		d, ok, err := ch.Get(DLQName(queue), false)
		if err != nil {
			return replayed, fmt.Errorf("rabbit: read %s: %w", DLQName(queue), err)
		}
		if !ok || seen[d.MessageId] {
			return replayed, nil
		}
		seen[d.MessageId] = true
		dl := deadLetterOf(&d, queue)
		if match != nil && !match(dl) {
			continue // left unacked: back in the DLQ when the channel closes
		}
		m := republish(&d, dl.Queue, dl.Queue)
		delete(m.Headers, HeaderError)
		delete(m.Headers, HeaderQueue)
		delete(m.Headers, HeaderRetry)
		if err := pub.PublishOne(ctx, m); err != nil {
			return replayed, fmt.Errorf("rabbit: replay %s: %w", d.MessageId, err)
		}
		if err := d.Ack(false); err != nil {
			return replayed, fmt.Errorf("rabbit: ack replayed %s: %w", d.MessageId, err)
		}
		replayed++
	}
}
