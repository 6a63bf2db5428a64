package outbox_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/orderly/orderly/pkg/outbox"
	"github.com/orderly/orderly/pkg/pg"
)

// payloadSize matches the broker baseline in FACTS.md: 300-byte persistent messages.
const payloadSize = 300

func payload(i int) []byte {
	b := make([]byte, payloadSize)
	binary.BigEndian.PutUint64(b, uint64(i)) //nolint:gosec // i is a non-negative counter
	return b
}

// rawConsumer acks everything on the test queue with a plain amqp091-go loop
// and counts it; every sub-benchmark uses it, so they differ only in how the
// messages are published.
func (e *env) rawConsumer(b *testing.B, got *atomic.Int64, onMessage func(*amqp.Delivery)) {
	b.Helper()
	ch, _, err := e.conn.Channel(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = ch.Close() })
	if err := ch.Qos(512, 0, false); err != nil {
		b.Fatal(err)
	}
	deliveries, err := ch.Consume(queue, "", false, false, false, false, nil)
	if err != nil {
		b.Fatal(err)
	}
	go func() {
		for d := range deliveries {
			if onMessage != nil {
				onMessage(&d)
			}
			_ = d.Ack(false)
			got.Add(1)
		}
	}()
}

func waitFor(b *testing.B, got *atomic.Int64, want int64) {
	b.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for got.Load() < want {
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d arrived", got.Load(), want)
		}
		time.Sleep(time.Millisecond)
	}
}

// BenchmarkThroughput compares, in one run, what the broker alone does with
// publisher confirms and what the outbox relay does on the same topology
// (topic exchange → quorum queue → acking consumer). Run with a fixed count,
// e.g. -benchtime=20000x; each op is one message.
func BenchmarkThroughput(b *testing.B) {
	b.Run("rabbitmq-alone", func(b *testing.B) {
		e := newEnv(b)
		var got atomic.Int64
		e.rawConsumer(b, &got, nil)
		pubCh, _, err := e.conn.Channel(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		defer pubCh.Close()
		if err := pubCh.Confirm(false); err != nil {
			b.Fatal(err)
		}
		const window = 256
		b.ResetTimer()
		start := time.Now()
		inflight := make([]*amqp.DeferredConfirmation, 0, window)
		for i := range b.N {
			dc, err := pubCh.PublishWithDeferredConfirm(exchange, "thing.happened", false, false, amqp.Publishing{
				DeliveryMode: amqp.Persistent, MessageId: fmt.Sprint(i), Body: payload(i)})
			if err != nil {
				b.Fatal(err)
			}
			inflight = append(inflight, dc)
			if len(inflight) == window {
				for _, dc := range inflight {
					if !dc.Wait() {
						b.Fatal("nack")
					}
				}
				inflight = inflight[:0]
			}
		}
		for _, dc := range inflight {
			if !dc.Wait() {
				b.Fatal("nack")
			}
		}
		waitFor(b, &got, int64(b.N))
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
	})

	// What 8 writers commit alone, one event per transaction, no relay.
	b.Run("writers-only", func(b *testing.B) {
		e := newEnv(b)
		b.ResetTimer()
		start := time.Now()
		writeConcurrently(b, e, b.N, 8, 1)
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
	})

	// The relay drains a backlog that 8 writers committed: its own capacity.
	b.Run("relay-drain", func(b *testing.B) {
		e := newEnv(b)
		writeConcurrently(b, e, b.N, 8, 10)
		var got atomic.Int64
		e.rawConsumer(b, &got, nil)
		b.ResetTimer()
		start := time.Now()
		e.startRelay(b, e.conn.NewPublisher())
		waitFor(b, &got, int64(b.N))
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
	})

	// 8 writers commit one event per transaction (as an order does) while the
	// relay runs: the end-to-end rate of the whole path.
	b.Run("relay-8-writers-live", func(b *testing.B) {
		e := newEnv(b)
		var got atomic.Int64
		e.rawConsumer(b, &got, nil)
		e.startRelay(b, e.conn.NewPublisher())
		b.ResetTimer()
		start := time.Now()
		writeConcurrently(b, e, b.N, 8, 1)
		waitFor(b, &got, int64(b.N))
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
	})
}

// writeConcurrently commits n events from the given number of writers, perTx
// events per transaction, spread over 100 aggregates.
func writeConcurrently(b *testing.B, e *env, n, writers, perTx int) {
	b.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for {
				first := int(next.Add(int64(perTx))) - perTx
				if first >= n {
					return
				}
				var evs []outbox.Event
				for i := first; i < min(first+perTx, n); i++ {
					evs = append(evs, outbox.Event{Exchange: exchange, RoutingKey: "thing.happened", Type: "bench.Event",
						AggregateID: fmt.Sprintf("agg-%d", i%100), Payload: payload(i)})
				}
				err := pg.Transact(context.Background(), e.pool, func(tx pgx.Tx) error {
					return outbox.Add(context.Background(), tx, evs...)
				})
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// BenchmarkCommitToConsumerLatency writes events at a steady 1,000 per second
// (one per transaction) and measures from each COMMIT returning to the
// consumer receiving the event. Each op is one event: -benchtime=10000x is
// ten seconds of traffic.
func BenchmarkCommitToConsumerLatency(b *testing.B) {
	e := newEnv(b)
	var (
		mu        sync.Mutex
		committed = make([]time.Time, b.N)
		received  = make([]time.Time, b.N)
		got       atomic.Int64
	)
	e.rawConsumer(b, &got, func(d *amqp.Delivery) {
		now := time.Now()
		i := int(binary.BigEndian.Uint64(d.Body)) //nolint:gosec // written from a non-negative int
		mu.Lock()
		received[i] = now
		mu.Unlock()
	})
	e.startRelay(b, e.conn.NewPublisher())

	const rate = 1000
	tick := time.NewTicker(time.Second / rate)
	defer tick.Stop()
	b.ResetTimer()
	for i := range b.N {
		<-tick.C
		// Writes go out concurrently so a slow commit does not lower the rate.
		go func() {
			err := pg.Transact(context.Background(), e.pool, func(tx pgx.Tx) error {
				return outbox.Add(context.Background(), tx, outbox.Event{Exchange: exchange, RoutingKey: "thing.happened",
					Type: "bench.Event", AggregateID: fmt.Sprintf("agg-%d", i%100), Payload: payload(i)})
			})
			mu.Lock()
			committed[i] = time.Now()
			mu.Unlock()
			if err != nil {
				b.Error(err)
			}
		}()
	}
	waitFor(b, &got, int64(b.N))
	b.StopTimer()
	mu.Lock()
	defer mu.Unlock()
	// The consumer can get an event before its writer hears COMMIT's reply
	// (the relay wakes on the commit itself); that counts as zero.
	latencies := make([]time.Duration, b.N)
	for i := range latencies {
		latencies[i] = max(received[i].Sub(committed[i]), 0)
	}
	slices.Sort(latencies)
	q := func(p float64) float64 {
		return float64(latencies[int(p*float64(len(latencies)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(q(1), "max-ms")
}
