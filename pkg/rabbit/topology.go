package rabbit

import (
	"context"
	"errors"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Queue describes a durable quorum queue a consumer reads, and its companions:
// <name>.dlq for dead letters and one <name>.retry.<n> per retry delay, whose
// expired messages flow back into <name>. Messages move between them through
// the queue's own direct exchange <name>.dlx (DLXName), never through the
// default exchange: publishing to the default exchange reaches every queue
// of the vhost, so a broker user allowed to (amq.default, in RabbitMQ's
// permission checks) could write into another service's queues.
type Queue struct {
	Name     string
	Bindings []Binding
	// DeliveryLimit is how often the broker hands out a message that keeps
	// being returned (crash, lost link, panic) before dead-lettering it. Keep
	// it generous: on RabbitMQ 3.10 a dropped connection counts as a delivery.
	DeliveryLimit int
	// RetryDelays are the waits before each retry of a transient failure; a
	// failure after the last one sends the message to the DLQ.
	RetryDelays []time.Duration
	// Expires removes the queue after this long without consumers (for
	// per-instance queues of replicas that went away); zero keeps it. Only
	// the queue itself expires: its retry and dead-letter queues never have
	// consumers, so they would expire under a live consumer and the copies
	// moved into them would be dropped.
	Expires time.Duration
}

// Binding routes messages published to Exchange with Key into a queue.
type Binding struct {
	Exchange string
	Key      string
}

// Topology is what a service declares at start and after every reconnect:
// the exchanges it publishes to, and the queues it reads (with the exchanges
// their bindings name).
type Topology struct {
	Exchanges []string
	Queues    []Queue
}

// DefaultDeliveryLimit is the delivery limit of queues that do not set one.
const DefaultDeliveryLimit = 20

// DefaultRetryDelays back off transient failures over about a minute.
var DefaultRetryDelays = []time.Duration{time.Second, 5 * time.Second, 30 * time.Second}

// DLQName is the dead-letter queue of queue.
func DLQName(queue string) string { return queue + ".dlq" }

// DLXName is the direct exchange that routes queue's messages between
// queue, its retry queues and its DLQ, each bound with its own name as the
// routing key. Its name starts with the queue's, so the broker permissions
// that cover a service's queues cover it too (docs/deploy.md, "Broker
// users").
func DLXName(queue string) string { return queue + ".dlx" }

// RetryQueueName is the queue holding messages for their attempt-th retry.
func RetryQueueName(queue string, attempt int) string {
	return fmt.Sprintf("%s.retry.%d", queue, attempt)
}

// Declare creates the exchanges, queues and bindings of t. Declaring what
// already exists with the same arguments is a no-op, so every replica does it
// at start. It fails if an existing queue has different arguments, or if an
// exchange a binding reads from does not exist and the broker user may not
// create it (sources).
func (c *Conn) Declare(ctx context.Context, t Topology) error {
	if err := c.sources(ctx, t); err != nil {
		return err
	}
	ch, _, err := c.Channel(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = ch.Close() }()
	return declare(ch, t)
}

// sources makes sure that every exchange the bindings of t read from, other
// than the exchanges t declares itself, exists. Such an exchange belongs to
// another service, whose broker user alone may configure it: it is looked
// up passively (which needs no permission) and declared only when missing,
// which a development user (guest) may do and a service's own user may not.
// With per-service users the broker's definitions create every exchange up
// front, so a consumer never waits for its publisher to start.
func (c *Conn) sources(ctx context.Context, t Topology) error {
	seen := make(map[string]bool, len(t.Exchanges))
	for _, ex := range t.Exchanges {
		seen[ex] = true
	}
	for _, q := range t.Queues {
		for _, b := range q.Bindings {
			if seen[b.Exchange] {
				continue
			}
			seen[b.Exchange] = true
			if err := c.ensureExchange(ctx, b.Exchange); err != nil {
				return err
			}
		}
	}
	return nil
}

// ensureExchange declares the topic exchange name unless it exists. Each
// attempt has a channel of its own, since a failed declaration closes it.
func (c *Conn) ensureExchange(ctx context.Context, name string) error {
	try := func(passive bool) error {
		ch, _, err := c.Channel(ctx)
		if err != nil {
			return err
		}
		defer func() { _ = ch.Close() }()
		if passive {
			return ch.ExchangeDeclarePassive(name, amqp.ExchangeTopic, true, false, false, false, nil)
		}
		return ch.ExchangeDeclare(name, amqp.ExchangeTopic, true, false, false, false, nil)
	}
	err := try(true)
	var amqpErr *amqp.Error
	if err == nil || !errors.As(err, &amqpErr) || amqpErr.Code != amqp.NotFound {
		if err != nil {
			return fmt.Errorf("rabbit: look up exchange %s: %w", name, err)
		}
		return nil
	}
	err = try(false)
	if errors.As(err, &amqpErr) && amqpErr.Code == amqp.AccessRefused {
		return fmt.Errorf("rabbit: exchange %s does not exist and this broker user may not create it "+
			"(the broker's definitions create it, or its own service when it starts): %w", name, err)
	}
	if err != nil {
		return fmt.Errorf("rabbit: declare exchange %s: %w", name, err)
	}
	return nil
}

func declare(ch *amqp.Channel, t Topology) error {
	for _, ex := range t.Exchanges {
		if err := ch.ExchangeDeclare(ex, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
			return fmt.Errorf("rabbit: declare exchange %s: %w", ex, err)
		}
	}
	for _, q := range t.Queues {
		if err := declareQueue(ch, q); err != nil {
			return err
		}
	}
	return nil
}

func declareQueue(ch *amqp.Channel, q Queue) error {
	limit := q.DeliveryLimit
	if limit == 0 {
		limit = DefaultDeliveryLimit
	}
	quorum := func(extra amqp.Table) amqp.Table {
		args := amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum}
		for k, v := range extra {
			args[k] = v
		}
		return args
	}
	dlx, dlq := DLXName(q.Name), DLQName(q.Name)
	if err := ch.ExchangeDeclare(dlx, amqp.ExchangeDirect, true, false, false, false, nil); err != nil {
		return fmt.Errorf("rabbit: declare exchange %s: %w", dlx, err)
	}
	// bind routes the messages sent to dlx with queue's name as the routing
	// key into queue.
	bind := func(queue string) error {
		if err := ch.QueueBind(queue, queue, dlx, false, nil); err != nil {
			return fmt.Errorf("rabbit: bind %s to %s: %w", queue, dlx, err)
		}
		return nil
	}
	if _, err := ch.QueueDeclare(dlq, true, false, false, false, quorum(nil)); err != nil {
		return fmt.Errorf("rabbit: declare %s: %w", dlq, err)
	}
	if err := bind(dlq); err != nil {
		return err
	}
	// At-least-once dead-lettering needs reject-publish overflow; without it
	// the broker silently falls back to at-most-once.
	args := quorum(amqp.Table{
		"x-delivery-limit":          int64(limit),
		"x-dead-letter-exchange":    dlx,
		"x-dead-letter-routing-key": dlq,
		"x-dead-letter-strategy":    "at-least-once",
		amqp.QueueOverflowArg:       amqp.QueueOverflowRejectPublish,
	})
	if q.Expires > 0 {
		args[amqp.QueueTTLArg] = q.Expires.Milliseconds()
	}
	if _, err := ch.QueueDeclare(q.Name, true, false, false, false, args); err != nil {
		return fmt.Errorf("rabbit: declare %s: %w", q.Name, err)
	}
	if err := bind(q.Name); err != nil {
		return err
	}
	for i, d := range q.RetryDelays {
		name := RetryQueueName(q.Name, i+1)
		_, err := ch.QueueDeclare(name, true, false, false, false, quorum(amqp.Table{
			amqp.QueueMessageTTLArg:     d.Milliseconds(),
			"x-dead-letter-exchange":    dlx,
			"x-dead-letter-routing-key": q.Name,
			"x-dead-letter-strategy":    "at-least-once",
			amqp.QueueOverflowArg:       amqp.QueueOverflowRejectPublish,
		}))
		if err != nil {
			return fmt.Errorf("rabbit: declare %s: %w", name, err)
		}
		if err := bind(name); err != nil {
			return err
		}
	}
	// The exchanges the bindings read from exist: Declare and the consumer
	// made sure of it (Conn.sources) without configuring them, which only
	// their own service's broker user may.
	for _, b := range q.Bindings {
		if err := ch.QueueBind(q.Name, b.Key, b.Exchange, false, nil); err != nil {
			return fmt.Errorf("rabbit: bind %s to %s/%s: %w", q.Name, b.Exchange, b.Key, err)
		}
	}
	return nil
}
