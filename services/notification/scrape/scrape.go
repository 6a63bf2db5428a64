// Package scrape reads, for the operators' dashboard, what every service
// reports on its Prometheus /metrics: the messages in each dead-letter
// queue (messaging_queue_depth{kind="dlq"}) and the outbox backlog
// (outbox_oldest_pending_age_seconds, outbox_pending). Each service is the
// authority on its own queues and database, and already publishes these
// for the alerts; reading them here keeps the notification service out of
// other services' broker permissions and databases.
package scrape

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/orderly/orderly/services/notification/dashboard"
)

// The series read, as Prometheus names them.
const (
	// By messaging_destination_name (the consumer's queue) and kind;
	// kind="dlq" is the queue's dead letters.
	metricQueueDepth  = "messaging_queue_depth"
	metricOutboxAge   = "outbox_oldest_pending_age_seconds"
	metricOutboxCount = "outbox_pending"
)

// maxBody bounds one /metrics answer; a service's is tens of KiB.
const maxBody = 8 << 20

// Target is one service's metrics endpoint.
type Target struct {
	Service string
	URL     string
}

// ParseTargets parses "name=url,name=url" (NOTIFICATION_DASHBOARD_SOURCES).
// It returns an error naming the first entry that is not name=http(s)://….
func ParseTargets(s []string) ([]Target, error) {
	var out []Target
	for _, e := range s {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		name, u, ok := strings.Cut(e, "=")
		name, u = strings.TrimSpace(name), strings.TrimSpace(u)
		if !ok || name == "" || !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
			return nil, fmt.Errorf("%q is not name=http(s)://host/metrics", e)
		}
		out = append(out, Target{Service: name, URL: u})
	}
	return out, nil
}

// Sources reads Targets.
type Sources struct {
	targets []Target
	client  *http.Client
}

// New returns Sources reading targets with client (its Timeout bounds each
// read; nil: 2 s).
func New(targets []Target, client *http.Client) *Sources {
	if client == nil {
		client = &http.Client{Timeout: 2 * time.Second}
	}
	return &Sources{targets: targets, client: client}
}

// Read reads every target at once and returns what they report, in the
// targets' order (queues by name). A target that cannot be read shows in
// Sources with its error, and adds nothing else.
func (s *Sources) Read(ctx context.Context) dashboard.Remote {
	type result struct {
		fams map[string]*dto.MetricFamily
		err  error
		at   time.Time
	}
	results := make([]result, len(s.targets))
	var wg sync.WaitGroup
	for i, t := range s.targets {
		wg.Go(func() {
			fams, err := s.read(ctx, t.URL)
			results[i] = result{fams: fams, err: err, at: time.Now().UTC()}
		})
	}
	wg.Wait()

	out := dashboard.Remote{DeadLetters: []dashboard.DeadLetters{}, Outboxes: []dashboard.Outbox{}, Sources: []dashboard.SourceStatus{}}
	for i, t := range s.targets {
		r := results[i]
		st := dashboard.SourceStatus{Service: t.Service, OK: r.err == nil, At: r.at}
		if r.err != nil {
			st.Error = r.err.Error()
		}
		out.Sources = append(out.Sources, st)
		if r.err != nil {
			continue
		}
		var dls []dashboard.DeadLetters
		for _, m := range r.fams[metricQueueDepth].GetMetric() {
			if label(m, "kind") == "dlq" {
				dls = append(dls, dashboard.DeadLetters{Service: t.Service, Queue: label(m, "messaging_destination_name"), Messages: int64(value(m))})
			}
		}
		slices.SortFunc(dls, func(a, b dashboard.DeadLetters) int { return strings.Compare(a.Queue, b.Queue) })
		out.DeadLetters = append(out.DeadLetters, dls...)
		if age := r.fams[metricOutboxAge].GetMetric(); len(age) > 0 {
			o := dashboard.Outbox{Service: t.Service, OldestPendingSeconds: value(age[0])}
			if n := r.fams[metricOutboxCount].GetMetric(); len(n) > 0 {
				o.Pending = int64(value(n[0]))
			}
			out.Outboxes = append(out.Outboxes, o)
		}
	}
	return out
}

// read fetches and parses one /metrics.
func (s *Sources) read(ctx context.Context, url string) (map[string]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s answered %d", url, resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", url, err)
	}
	return fams, nil
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func value(m *dto.Metric) float64 {
	switch {
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetUntyped() != nil:
		return m.GetUntyped().GetValue()
	}
	return 0
}
