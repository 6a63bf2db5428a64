package rabbit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/trace"
)

// Message is one AMQP message to publish. Headers carry the W3C trace
// context and the aggregate id; MessageID is the event id consumers
// deduplicate on.
type Message struct {
	Exchange    string
	RoutingKey  string
	MessageID   string
	Type        string
	ContentType string
	Timestamp   time.Time
	Headers     amqp.Table
	Body        []byte
}

// ErrNotConfirmed marks a message the broker did not confirm: it nacked it,
// or the link dropped before the confirm arrived. Either way the message may
// or may not have been routed, so the caller publishes it again.
var ErrNotConfirmed = errors.New("rabbit: publish not confirmed")

// Publisher publishes persistent messages in confirm mode with many confirms
// in flight. It reopens its channel after a reconnect. Safe for concurrent use.
type Publisher struct {
	conn *Conn

	mu  sync.Mutex
	ch  *amqp.Channel
	gen uint64
}

// NewPublisher returns a publisher on c; it opens its channel on first use.
func (c *Conn) NewPublisher() *Publisher { return &Publisher{conn: c} }

func (p *Publisher) channel(ctx context.Context) (*amqp.Channel, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ch != nil && !p.ch.IsClosed() && p.gen == p.conn.Generation() {
		return p.ch, nil
	}
	if p.ch != nil {
		_ = p.ch.Close()
		p.ch = nil
	}
	ch, gen, err := p.conn.Channel(ctx)
	if err != nil {
		return nil, err
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, fmt.Errorf("rabbit: confirm mode: %w", err)
	}
	p.ch, p.gen = ch, gen
	return ch, nil
}

// Publish sends every message, then waits for all their confirms, so a batch
// costs one round trip rather than one per message. It returns one error per
// message (nil when the broker confirmed it) and waits for a reconnect if the
// link is down when it starts. A message whose entry is non-nil must be
// published again; it may already have been routed (at-least-once).
func (p *Publisher) Publish(ctx context.Context, msgs []Message) []error {
	return p.Send(ctx, msgs)(ctx)
}

// Send writes every message to the broker without waiting for confirms, so
// the caller can prepare the next batch meanwhile, and returns a function
// that waits for the confirms and reports one error per message (nil when
// confirmed), or ctx's error for those still unconfirmed when ctx ends.
// Order on the wire is the order of msgs, and of successive calls.
//
// Each message gets a producer span (see startPublish), ended when wait
// learns the message's fate.
func (p *Publisher) Send(ctx context.Context, msgs []Message) (wait func(context.Context) []error) {
	b := &pending{errs: make([]error, len(msgs)), confirm: make([]*amqp.DeferredConfirmation, len(msgs)), spans: make([]trace.Span, len(msgs))}
	traced := make([]Message, len(msgs)) // the caller's are left as they were
	for i := range msgs {
		traced[i], b.spans[i] = startPublish(ctx, msgs[i])
	}
	msgs = traced
	ch, err := p.channel(ctx)
	if err != nil {
		for i := range b.errs {
			b.errs[i] = err
		}
		return b.wait
	}
	for i, m := range msgs {
		b.confirm[i], err = ch.PublishWithDeferredConfirmWithContext(ctx, m.Exchange, m.RoutingKey, false, false, amqp.Publishing{
			Headers:      m.Headers,
			ContentType:  m.ContentType,
			DeliveryMode: amqp.Persistent,
			MessageId:    m.MessageID,
			Timestamp:    m.Timestamp,
			Type:         m.Type,
			Body:         m.Body,
		})
		if err != nil {
			// The channel is gone; the rest would fail the same way.
			for j := i; j < len(msgs); j++ {
				b.errs[j] = fmt.Errorf("rabbit: publish: %w", err)
			}
			break
		}
	}
	return b.wait
}

// pending is a batch sent to the broker whose confirms may still be coming.
type pending struct {
	errs    []error
	confirm []*amqp.DeferredConfirmation
	spans   []trace.Span // the messages' producer spans, ended by wait
}

func (b *pending) wait(ctx context.Context) []error {
	for i, dc := range b.confirm {
		if dc != nil && b.errs[i] == nil {
			acked, err := dc.WaitContext(ctx)
			switch {
			case err != nil:
				b.errs[i] = err
			case !acked:
				b.errs[i] = ErrNotConfirmed
			}
		}
		endPublish(b.spans[i], b.errs[i])
	}
	return b.errs
}

// PublishOne publishes a single message and waits for its confirm.
func (p *Publisher) PublishOne(ctx context.Context, m Message) error {
	return p.Publish(ctx, []Message{m})[0]
}

// Close closes the publisher's channel.
func (p *Publisher) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ch == nil {
		return nil
	}
	err := p.ch.Close()
	p.ch = nil
	if errors.Is(err, amqp.ErrClosed) {
		return nil
	}
	return err
}
