package rabbit

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/orderly/orderly/pkg/telemetry"
)

// Header names Orderly sets on messages.
const (
	// HeaderAggregateID names the entity (an order id) a message is about;
	// the consumer keeps messages with the same value in order.
	HeaderAggregateID = "aggregate_id"
	// HeaderError carries why a message was dead-lettered.
	HeaderError = "x-orderly-error"
	// HeaderQueue names the queue a dead letter came from, for replay.
	HeaderQueue = "x-orderly-queue"
	// HeaderRetry counts the delayed retries a message has been through.
	HeaderRetry = "x-orderly-retry"
	// headerDeliveryCount is set by quorum queues on redeliveries.
	headerDeliveryCount = "x-delivery-count"
)

// Handler processes one delivery. Return nil to acknowledge it, an error
// wrapped with Permanent to dead-letter it at once, or any other error to
// retry it later with backoff. A panic counts as a crash: the message is
// returned to the queue and dead-lettered once it reaches the delivery limit.
type Handler func(ctx context.Context, d *amqp.Delivery) error

type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// Permanent marks err as not worth retrying (an undecodable body, a message
// that breaks an invariant): the consumer sends it to the DLQ at once.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// Delivery is one message of a batch, with the context its handling runs in:
// the trace it continues (from its headers) and its consumer span.
type Delivery struct {
	Ctx context.Context
	*amqp.Delivery
}

// BatchHandler processes messages that arrived together, in queue order
// (all of one aggregate are in one batch's lane order), and returns one
// result per message with Handler's meaning. It lets a consumer apply many
// messages in one database transaction under load while a lone message is
// still handled at once: a batch is whatever was already waiting, never a
// wait for more. A panic counts as a crash of every message of the batch;
// they are then handled again one at a time, so that only the culprit is
// returned to the queue.
type BatchHandler func(ctx context.Context, batch []Delivery) []error

// IsPermanent reports whether err was marked with Permanent.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

// Consumer reads one queue with manual acks. Messages with the same
// aggregate id go to the same worker, so they are handled in queue order.
type Consumer struct {
	Conn  *Conn
	Queue Queue
	// Handler handles one message at a time; Batch, when set instead,
	// handles what a worker finds waiting, up to MaxBatch messages.
	Handler Handler
	Batch   BatchHandler
	// Workers handle messages concurrently (default 4); Prefetch bounds the
	// unacknowledged messages held (default 4 per worker, or MaxBatch per
	// worker with Batch, so that batches can fill under load).
	Workers  int
	Prefetch int
	// MaxBatch bounds a batch (default 32).
	MaxBatch int
	// HandlerTimeout bounds one handler or batch call (default 30s).
	HandlerTimeout time.Duration
	Log            *slog.Logger
	// Meter records messaging.client.consumed.messages (by outcome) and
	// messaging.process.duration for the queue; nil records nothing.
	Meter metric.Meter

	pub      *Publisher
	consumed metric.Int64Counter
	duration metric.Float64Histogram
}

// Outcomes of a delivery, the outcome attribute of the consumer's metrics.
const (
	outcomeAck        = "ack"
	outcomeRetry      = "retry"
	outcomeDeadLetter = "dead_letter"
	outcomeRequeue    = "requeue"
)

// Run declares the topology, consumes until ctx ends, and reconnects by
// itself when the link drops. On ctx's end it stops taking deliveries, lets
// running handlers finish and returns nil; messages not yet handled are
// returned to the queue by the broker.
func (c *Consumer) Run(ctx context.Context) error {
	if (c.Handler == nil) == (c.Batch == nil) {
		return errors.New("rabbit: a consumer needs exactly one of Handler and Batch")
	}
	if c.Workers <= 0 {
		c.Workers = 4
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = 32
	}
	if c.Batch == nil {
		c.MaxBatch = 1
	}
	if c.Prefetch <= 0 {
		c.Prefetch = max(4, c.MaxBatch) * c.Workers
	}
	if c.HandlerTimeout <= 0 {
		c.HandlerTimeout = 30 * time.Second
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.Queue.DeliveryLimit == 0 {
		c.Queue.DeliveryLimit = DefaultDeliveryLimit
	}
	if err := c.instrument(); err != nil {
		return err
	}
	c.pub = c.Conn.NewPublisher()
	defer func() { _ = c.pub.Close() }()
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
		err := c.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, ErrClosed) {
			return err
		}
		c.Log.Warn("consumer session ended; resuming", "queue", c.Queue.Name, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
	}
}

// session consumes on one channel until the channel dies or ctx ends.
func (c *Consumer) session(ctx context.Context) error {
	t := Topology{Queues: []Queue{c.Queue}}
	if err := c.Conn.sources(ctx, t); err != nil {
		return err
	}
	ch, _, err := c.Conn.Channel(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = ch.Close() }()
	if err := declare(ch, t); err != nil {
		return err
	}
	if err := ch.Qos(c.Prefetch, 0, false); err != nil {
		return fmt.Errorf("rabbit: qos: %w", err)
	}
	tag := fmt.Sprintf("%s-%p", c.Queue.Name, ch)
	deliveries, err := ch.Consume(c.Queue.Name, tag, false, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("rabbit: consume %s: %w", c.Queue.Name, err)
	}

	lanes := make([]chan amqp.Delivery, c.Workers)
	var wg sync.WaitGroup
	for i := range lanes {
		lanes[i] = make(chan amqp.Delivery, c.Prefetch)
		wg.Go(func() {
			if c.Batch == nil {
				for d := range lanes[i] {
					c.handle(ctx, &d)
				}
				return
			}
			for d := range lanes[i] {
				c.handleBatch(ctx, take(d, lanes[i], c.MaxBatch))
			}
		})
	}
	defer wg.Wait()
	defer func() {
		for _, l := range lanes {
			close(l)
		}
	}()

	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	for {
		select {
		case <-ctx.Done():
			// Stop the flow; deliveries already in lanes still get handled.
			_ = ch.Cancel(tag, false)
			return nil
		case err := <-closed:
			return fmt.Errorf("rabbit: channel closed: %w", err)
		case d, ok := <-deliveries:
			if !ok {
				return errors.New("rabbit: delivery stream ended")
			}
			lanes[lane(&d, len(lanes))] <- d
		}
	}
}

// instrument creates the consumer's metrics.
func (c *Consumer) instrument() error {
	m := c.Meter
	if m == nil {
		m = noop.NewMeterProvider().Meter("")
	}
	var err error
	c.consumed, err = m.Int64Counter("messaging.client.consumed.messages",
		metric.WithDescription("Messages the consumer finished with, by outcome: ack, retry (moved to a delayed retry queue), dead_letter or requeue (returned to the queue)."))
	if err != nil {
		return fmt.Errorf("rabbit: metric: %w", err)
	}
	// Every outcome is exported from the start, at 0, so that a rate of
	// dead letters or retries has a series before the first one.
	for _, o := range []string{outcomeAck, outcomeRetry, outcomeDeadLetter, outcomeRequeue} {
		c.consumed.Add(context.Background(), 0, metric.WithAttributes(
			attribute.String("messaging.destination.name", c.Queue.Name), attribute.String("outcome", o)))
	}
	c.duration, err = m.Float64Histogram("messaging.process.duration", metric.WithUnit("s"),
		metric.WithDescription("Time from taking a message to settling it, handler and ack included."),
		metric.WithExplicitBucketBoundaries(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
	if err != nil {
		return fmt.Errorf("rabbit: metric: %w", err)
	}
	return nil
}

// record counts one settled delivery.
func (c *Consumer) record(ctx context.Context, outcome string, start time.Time) {
	attrs := metric.WithAttributes(attribute.String("messaging.destination.name", c.Queue.Name), attribute.String("outcome", outcome))
	c.consumed.Add(ctx, 1, attrs)
	c.duration.Record(ctx, time.Since(start).Seconds(), attrs)
}

// take returns first and what else is waiting in lane, up to limit messages
// in all. It never waits: under light load a message is handled alone and
// at once, under load batches grow by themselves.
func take(first amqp.Delivery, lane <-chan amqp.Delivery, limit int) []amqp.Delivery {
	batch := []amqp.Delivery{first}
	for len(batch) < limit {
		select {
		case d, ok := <-lane:
			if !ok {
				return batch
			}
			batch = append(batch, d)
		default:
			return batch
		}
	}
	return batch
}

func lane(d *amqp.Delivery, n int) int {
	key, _ := d.Headers[HeaderAggregateID].(string)
	if key == "" {
		key = d.MessageId
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return int(h.Sum32() % uint32(n)) //nolint:gosec // n is a small positive worker count
}

func (c *Consumer) handle(ctx context.Context, d *amqp.Delivery) {
	start := time.Now()
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.HandlerTimeout)
	defer cancel()
	hctx, span := c.startProcess(hctx, d, trace.SpanContext{})
	defer span.End()

	panicked, err := c.call(hctx, d)
	outcome := c.decide(hctx, span, d, panicked, err)
	span.SetAttributes(outcomeKey.String(outcome))
	c.record(hctx, outcome, start)
}

// handleBatch runs the batch handler on ds and settles each message by its
// result. After a panic it handles the messages again one at a time.
func (c *Consumer) handleBatch(ctx context.Context, ds []amqp.Delivery) {
	start := time.Now()
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.HandlerTimeout)
	defer cancel()
	// A lone message's statements run in its own span; a batch's, which
	// serve several traces, in the batch's span (see startBatch).
	hctx, bspan := bctx, trace.Span(tracenoop.Span{})
	if len(ds) > 1 {
		hctx, bspan = c.startBatch(bctx, ds)
	}
	defer bspan.End()
	batch := make([]Delivery, len(ds))
	spans := make([]trace.Span, len(ds))
	for i := range ds {
		batch[i].Delivery = &ds[i]
		batch[i].Ctx, spans[i] = c.startProcess(bctx, &ds[i], bspan.SpanContext())
	}
	if len(ds) == 1 {
		hctx = batch[0].Ctx
	}
	errs, err := c.callBatch(hctx, batch)
	if err != nil && len(ds) > 1 {
		for i := range spans {
			spans[i].End()
		}
		bspan.End()
		cancel()
		for i := range ds {
			c.handleBatch(ctx, ds[i:i+1])
		}
		return
	}
	for i, b := range batch {
		panicked, herr := err != nil, err
		if !panicked {
			herr = errs[i]
		}
		outcome := c.decide(b.Ctx, spans[i], b.Delivery, panicked, herr)
		spans[i].SetAttributes(outcomeKey.String(outcome))
		c.record(b.Ctx, outcome, start)
		spans[i].End()
	}
}

// decide settles d after its handler returned err and says how.
func (c *Consumer) decide(ctx context.Context, span trace.Span, d *amqp.Delivery, panicked bool, err error) string {
	if err == nil {
		if err := d.Ack(false); err != nil {
			c.Log.WarnContext(ctx, "ack failed; the message will be redelivered", "queue", c.Queue.Name, "message_id", d.MessageId, "err", err)
		}
		return outcomeAck
	}
	log := c.Log.With("queue", c.Queue.Name, "message_id", d.MessageId, "type", d.Type)
	switch {
	case panicked:
		span.SetStatus(codes.Error, "panic")
		if deliveryCount(d) >= int64(c.Queue.DeliveryLimit) {
			return c.deadLetter(ctx, log, d, "poison message: "+err.Error())
		}
		log.ErrorContext(ctx, "handler panicked; returning message to the queue", "err", err, "deliveries", deliveryCount(d)+1)
		c.settle(ctx, log, d.Nack(false, true))
		return outcomeRequeue
	case IsPermanent(err):
		span.SetStatus(codes.Error, err.Error())
		return c.deadLetter(ctx, log, d, "permanent: "+err.Error())
	}
	span.SetStatus(codes.Error, err.Error())
	attempt := retryCount(d)
	if attempt >= len(c.Queue.RetryDelays) {
		return c.deadLetter(ctx, log, d, fmt.Sprintf("failed after %d retries: %v", attempt, err))
	}
	log.WarnContext(ctx, "handler failed; retrying later", "err", err, "attempt", attempt+1, "delay", c.Queue.RetryDelays[attempt])
	m := republish(d, c.Queue.Name, RetryQueueName(c.Queue.Name, attempt+1))
	m.Headers[HeaderRetry] = int64(attempt + 1)
	return c.forward(ctx, log, d, m, outcomeRetry)
}

// callBatch runs the batch handler, turning a panic into an error. A
// handler that returns the wrong number of results is a bug, reported the
// same way.
func (c *Consumer) callBatch(ctx context.Context, batch []Delivery) (errs []error, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
			c.Log.ErrorContext(ctx, "batch handler panic", "queue", c.Queue.Name, "messages", len(batch), "panic", r, "stack", string(debug.Stack()))
		}
	}()
	errs = c.Batch(ctx, batch)
	if len(errs) != len(batch) {
		return nil, fmt.Errorf("batch handler returned %d results for %d messages", len(errs), len(batch))
	}
	return errs, nil
}

// call runs the handler, turning a panic into an error.
func (c *Consumer) call(ctx context.Context, d *amqp.Delivery) (panicked bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			panicked, err = true, fmt.Errorf("panic: %v", r)
			c.Log.ErrorContext(ctx, "handler panic", "queue", c.Queue.Name, "panic", r, "stack", string(debug.Stack()))
		}
	}()
	return false, c.Handler(ctx, d)
}

func (c *Consumer) deadLetter(ctx context.Context, log *slog.Logger, d *amqp.Delivery, reason string) string {
	log.ErrorContext(ctx, "dead-lettering message", "reason", reason)
	m := republish(d, c.Queue.Name, DLQName(c.Queue.Name))
	m.Headers[HeaderError] = reason
	m.Headers[HeaderQueue] = c.Queue.Name
	return c.forward(ctx, log, d, m, outcomeDeadLetter)
}

// forward publishes m (to a retry queue or the DLQ) and acks d only once the
// broker confirmed m, so the message is never in neither place. It returns
// outcome, or requeue when m could not be published.
func (c *Consumer) forward(ctx context.Context, log *slog.Logger, d *amqp.Delivery, m Message, outcome string) string {
	// The move continues the trace from this consumer's span.
	telemetry.InjectHeaders(ctx, m.Headers)
	if err := c.pub.PublishOne(ctx, m); err != nil {
		log.ErrorContext(ctx, "could not move message; returning it to the queue", "to", m.RoutingKey, "err", err)
		c.settle(ctx, log, d.Nack(false, true))
		return outcomeRequeue
	}
	c.settle(ctx, log, d.Ack(false))
	return outcome
}

// settle logs a failed ack or nack. It fails when the channel died; the
// broker then redelivers the message and the inbox makes that harmless.
func (c *Consumer) settle(ctx context.Context, log *slog.Logger, err error) {
	if err != nil {
		log.WarnContext(ctx, "ack/nack failed; the message will be redelivered", "err", err)
	}
}

// republish copies d into a message for to, owner's queue, its retry queue
// or its DLQ, sent through owner's exchange DLXName(owner), which routes by
// queue name.
func republish(d *amqp.Delivery, owner, to string) Message {
	h := amqp.Table{}
	for k, v := range d.Headers {
		if k == headerDeliveryCount || k == "x-death" || k == "x-first-death-exchange" ||
			k == "x-first-death-queue" || k == "x-first-death-reason" {
			continue
		}
		h[k] = v
	}
	return Message{
		Exchange:    DLXName(owner),
		RoutingKey:  to,
		MessageID:   d.MessageId,
		Type:        d.Type,
		ContentType: d.ContentType,
		Timestamp:   d.Timestamp,
		Headers:     h,
		Body:        d.Body,
	}
}

func deliveryCount(d *amqp.Delivery) int64 { return intHeader(d.Headers, headerDeliveryCount) }

func retryCount(d *amqp.Delivery) int { return int(intHeader(d.Headers, HeaderRetry)) }

func intHeader(h amqp.Table, key string) int64 {
	switch v := h[key].(type) {
	case int64:
		return v
	case int32:
		return int64(v)
	case int:
		return int64(v)
	case int16:
		return int64(v)
	case int8:
		return int64(v)
	case uint8:
		return int64(v)
	}
	return 0
}
