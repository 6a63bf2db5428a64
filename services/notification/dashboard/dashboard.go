// Package dashboard is the operators' live view of the shop
// (docs/decisions/0017-ops-dashboard.md): orders per status, orders placed
// per second over the last minutes, the latest status changes, and, read
// from every service's /metrics, the messages waiting in dead-letter
// queues and the age of each outbox's oldest unpublished event.
//
// A Board builds Snapshots. While someone watches (Hub.Watching), it
// publishes one on the hub's dashboard topic every Interval, each with a
// higher seq, so that the live machinery that streams order statuses to
// shoppers streams it to operators too. The figures come from three
// places, each refreshed at its own pace: the chart from the status changes
// this replica hears (Observe), counted in memory; the counts per status
// and the latest changes from the service's own tables; the dead letters
// and outbox ages from the other services' metrics (Sources).
package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/orderly/orderly/services/notification/status"
)

// Topic is the hub topic snapshots are published on.
const Topic = "dashboard"

// Statuses are the order statuses, in lifecycle order; a snapshot counts
// each of them, zeros included.
var Statuses = []string{"pending", "reserved", "confirmed", "shipped", "delivered", "cancelled"}

// Store is what the board reads from the service's own tables;
// *postgres.Store is one.
type Store interface {
	// CountByStatus returns the orders in each status.
	CountByStatus(ctx context.Context) (map[string]int64, error)
	// LatestChanges returns the n most recent statuses, newest first.
	LatestChanges(ctx context.Context, n int) ([]status.Change, error)
	// PlacedPerSecond returns the orders placed in each second of
	// [from, to), by Unix second.
	PlacedPerSecond(ctx context.Context, from, to time.Time) (map[int64]int64, error)
}

// Sources reads the other services' figures; *scrape.Sources is one.
type Sources interface {
	// Read returns what each configured service reports now. It does not
	// fail as a whole: a service that cannot be read says so in its
	// SourceStatus.
	Read(ctx context.Context) Remote
}

// Hub is where snapshots go; *live.Hub is one.
type Hub interface {
	// Watching reports whether anyone follows topic on this replica.
	Watching(topic string) bool
	// PublishTopic hands body, numbered seq, to every follower of topic.
	PublishTopic(topic string, seq int64, body []byte)
}

// Remote is what the other services report.
type Remote struct {
	// DeadLetters are the messages waiting in each DLQ, by service and
	// queue.
	DeadLetters []DeadLetters `json:"dead_letters"`
	// Outboxes are each publishing service's outbox backlog.
	Outboxes []Outbox `json:"outboxes"`
	// Sources says which services were read, and how it went.
	Sources []SourceStatus `json:"sources"`
}

// DeadLetters is the depth of one queue's DLQ.
type DeadLetters struct {
	Service  string `json:"service"`
	Queue    string `json:"queue"`
	Messages int64  `json:"messages"`
}

// Outbox is one service's outbox backlog.
type Outbox struct {
	Service string `json:"service"`
	// OldestPendingSeconds is the age of the oldest event not yet
	// confirmed by the broker (0 when there is none).
	OldestPendingSeconds float64 `json:"oldest_pending_seconds"`
	// Pending is how many events wait.
	Pending int64 `json:"pending"`
}

// SourceStatus is how reading one service's metrics went.
type SourceStatus struct {
	Service string    `json:"service"`
	OK      bool      `json:"ok"`
	Error   string    `json:"error,omitempty"`
	At      time.Time `json:"at"`
}

// Change is one status change as the dashboard lists it.
type Change struct {
	OrderID string    `json:"order_id"`
	Status  string    `json:"status"`
	Reason  *string   `json:"reason"`
	Seq     int64     `json:"seq"`
	At      time.Time `json:"at"`
}

// Rate is the orders placed per second over the chart's window: Points[i]
// is the mean over the Step seconds from Start + i×Step, the last one
// still filling.
type Rate struct {
	Start       time.Time `json:"start"`
	StepSeconds int       `json:"step_seconds"`
	Points      []float64 `json:"points"`
}

// Snapshot is everything the dashboard shows, as sent to the page.
type Snapshot struct {
	Type string `json:"type"` // "dashboard"
	// Seq numbers the snapshots of one replica; a higher one is newer.
	Seq int64     `json:"seq"`
	At  time.Time `json:"at"`
	// OrdersByStatus counts the orders the service knows, by status
	// (every status of Statuses, zeros included). Orders finished longer
	// than NOTIFICATION_RETENTION ago are purged, and no longer counted.
	OrdersByStatus map[string]int64 `json:"orders_by_status"`
	// CountedAt is when OrdersByStatus was counted.
	CountedAt time.Time `json:"counted_at"`
	// OrdersPerSecond is the chart.
	OrdersPerSecond Rate `json:"orders_per_second"`
	// Latest are the most recent status changes, newest first.
	Latest []Change `json:"latest"`
	Remote
}

// Options configure a Board. Zero durations and sizes take the defaults in
// brackets.
type Options struct {
	// Store reads the service's tables. Required.
	Store Store
	// Sources reads the other services; nil shows none.
	Sources Sources
	// Hub gets the snapshots. Required for Run.
	Hub Hub
	// Log gets the errors of reads. Required.
	Log *slog.Logger
	// Interval [1s] is how often a snapshot is published while someone
	// watches.
	Interval time.Duration
	// CountEvery [5s] is how often the orders are counted by status, a
	// query whose cost grows with the orders kept.
	CountEvery time.Duration
	// ReadEvery [5s] is how often the other services' metrics are read
	// (Prometheus scrapes every 15 s or so: more often would show nothing
	// new).
	ReadEvery time.Duration
	// Window [10m] is the span of the chart, Step [10s] its resolution.
	Window, Step time.Duration
	// Latest [20] is how many changes are listed.
	Latest int
}

// Board builds and publishes the dashboard's snapshots.
type Board struct {
	o    Options
	rate *rate

	mu        sync.Mutex
	seq       int64
	counts    map[string]int64
	countedAt time.Time
	remote    Remote
	readAt    time.Time
}

// New returns a board with o's settings. It returns an error when a
// required option is missing.
func New(o Options) (*Board, error) {
	if o.Store == nil || o.Log == nil {
		return nil, errors.New("dashboard: New needs a Store and a Log")
	}
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.Interval, time.Second)
	def(&o.CountEvery, 5*time.Second)
	def(&o.ReadEvery, 5*time.Second)
	def(&o.Window, 10*time.Minute)
	def(&o.Step, 10*time.Second)
	if o.Latest <= 0 {
		o.Latest = 20
	}
	if o.Step > o.Window {
		o.Step = o.Window
	}
	return &Board{o: o, rate: newRate(o.Window, o.Step, time.Now())}, nil
}

// Observe counts c toward the chart when it is an order's first status
// (seq 1: the order was placed). Call it once for every change stored
// (postgres.Listener.Heard: every replica hears each change once); it
// never blocks on I/O.
func (b *Board) Observe(c status.Change) {
	if c.Seq == 1 {
		b.rate.add(c.At, time.Now())
	}
}

// Run fills the chart with the orders placed before the board started, then
// publishes a snapshot every Interval while anyone watches, until ctx ends.
// It returns nil; a read that fails is logged and the snapshot keeps the
// figures read before.
func (b *Board) Run(ctx context.Context) error {
	if b.o.Hub == nil {
		return errors.New("dashboard: Run needs a Hub")
	}
	b.backfill(ctx)
	tick := time.NewTicker(b.o.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		if !b.o.Hub.Watching(Topic) {
			continue
		}
		s := b.Snapshot(ctx)
		body, err := json.Marshal(s)
		if err != nil {
			return fmt.Errorf("dashboard: encode a snapshot: %w", err)
		}
		b.o.Hub.PublishTopic(Topic, s.Seq, body)
	}
}

// backfill reads back the orders placed over the window before the board
// started: Observe counts those placed since.
func (b *Board) backfill(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	from, to := b.rate.span()
	got, err := b.o.Store.PlacedPerSecond(rctx, from, to)
	if err != nil {
		b.o.Log.WarnContext(ctx, "dashboard: could not read back the orders placed before start; the chart starts empty", "err", err)
		return
	}
	for sec, n := range got {
		b.rate.addN(time.Unix(sec, 0), n, time.Now())
	}
}

// Snapshot returns the dashboard now, refreshing what is due: the counts
// every CountEvery, the other services every ReadEvery, the latest changes
// and the chart every time. A read that fails leaves the figures it would
// have refreshed as they were (with their time), and is logged.
func (b *Board) Snapshot(ctx context.Context) Snapshot {
	now := time.Now()
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()

	b.mu.Lock()
	countDue := now.Sub(b.countedAt) >= b.o.CountEvery
	readDue := b.o.Sources != nil && now.Sub(b.readAt) >= b.o.ReadEvery
	b.mu.Unlock()
	if countDue {
		if counts, err := b.o.Store.CountByStatus(rctx); err != nil {
			b.o.Log.WarnContext(ctx, "dashboard: could not count orders by status", "err", err)
		} else {
			b.mu.Lock()
			b.counts, b.countedAt = counts, now
			b.mu.Unlock()
		}
	}
	if readDue {
		remote := b.o.Sources.Read(rctx)
		b.mu.Lock()
		b.remote, b.readAt = remote, now
		b.mu.Unlock()
	}
	var latest []Change
	if cs, err := b.o.Store.LatestChanges(rctx, b.o.Latest); err != nil {
		b.o.Log.WarnContext(ctx, "dashboard: could not read the latest changes", "err", err)
	} else {
		latest = make([]Change, len(cs))
		for i, c := range cs {
			latest[i] = Change{OrderID: c.OrderID, Status: c.Status, Seq: c.Seq, At: c.At.UTC()}
			if c.Reason != "" {
				latest[i].Reason = &c.Reason
			}
		}
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	b.seq++
	s := Snapshot{
		Type:            "dashboard",
		Seq:             b.seq,
		At:              now.UTC(),
		OrdersByStatus:  make(map[string]int64, len(Statuses)),
		CountedAt:       b.countedAt.UTC(),
		OrdersPerSecond: b.rate.read(now),
		Latest:          latest,
		Remote:          b.remote,
	}
	for _, st := range Statuses {
		s.OrdersByStatus[st] = b.counts[st]
	}
	// Empty lists, never null: what the page and the contract expect.
	if s.Latest == nil {
		s.Latest = []Change{}
	}
	if s.DeadLetters == nil {
		s.DeadLetters = []DeadLetters{}
	}
	if s.Outboxes == nil {
		s.Outboxes = []Outbox{}
	}
	if s.Sources == nil {
		s.Sources = []SourceStatus{}
	}
	return s
}
