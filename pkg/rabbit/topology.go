package rabbit

import (
	"context"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Queue describes a durable quorum queue a consumer reads, and its companions:
// <name>.dlq for dead letters and one <name>.retry.<n> per retry delay, whose
// expired messages flow back into <name>.
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

// RetryQueueName is the queue holding messages for their attempt-th retry.
func RetryQueueName(queue string, attempt int) string {
	return fmt.Sprintf("%s.retry.%d", queue, attempt)
}

// Declare creates the exchanges, queues and bindings of t. Declaring what
// already exists with the same arguments is a no-op, so every replica does it
// at start. It fails if an existing queue has different arguments.
func (c *Conn) Declare(ctx context.Context, t Topology) error {
	ch, _, err := c.Channel(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = ch.Close() }()
	return declare(ch, t)
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
	dlq := DLQName(q.Name)
	if _, err := ch.QueueDeclare(dlq, true, false, false, false, quorum(nil)); err != nil {
		return fmt.Errorf("rabbit: declare %s: %w", dlq, err)
	}
	// At-least-once dead-lettering needs reject-publish overflow; without it
	// the broker silently falls back to at-most-once.
	args := quorum(amqp.Table{
		"x-delivery-limit":          int64(limit),
		"x-dead-letter-exchange":    "",
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
	for i, d := range q.RetryDelays {
		name := RetryQueueName(q.Name, i+1)
		_, err := ch.QueueDeclare(name, true, false, false, false, quorum(amqp.Table{
			amqp.QueueMessageTTLArg:     d.Milliseconds(),
			"x-dead-letter-exchange":    "",
			"x-dead-letter-routing-key": q.Name,
			"x-dead-letter-strategy":    "at-least-once",
			amqp.QueueOverflowArg:       amqp.QueueOverflowRejectPublish,
		}))
		if err != nil {
			return fmt.Errorf("rabbit: declare %s: %w", name, err)
		}
	}
	declared := map[string]bool{}
	for _, b := range q.Bindings {
		// A binding needs its exchange; declaring it here, rather than in a
		// list kept beside the queue, makes the bindings the only place
		// that names it. Declaring an existing exchange is a no-op.
		if !declared[b.Exchange] {
			if err := ch.ExchangeDeclare(b.Exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
				return fmt.Errorf("rabbit: declare exchange %s: %w", b.Exchange, err)
			}
			declared[b.Exchange] = true
		}
		if err := ch.QueueBind(q.Name, b.Key, b.Exchange, false, nil); err != nil {
			return fmt.Errorf("rabbit: bind %s to %s/%s: %w", q.Name, b.Exchange, b.Key, err)
		}
	}
	return nil
}
