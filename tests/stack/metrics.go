package stack

import (
	"context"

	"net/http"
	"slices"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Metrics is one scrape of a service's /metrics, by metric family name
// as Prometheus spells it ("messaging_client_consumed_messages_total").
type Metrics map[string]*dto.MetricFamily

// Metrics scrapes the service's /metrics with Prometheus's own parser; an
// answer other than 200, or one that does not parse, fails tb.
func (svc *Service) Metrics(tb testing.TB) Metrics {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, svc.URL()+"/metrics", nil)
	if err != nil {
		tb.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("%s /metrics: %v", svc.Name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("%s /metrics answered %d", svc.Name, resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		tb.Fatalf("%s /metrics: %v", svc.Name, err)
	}
	return fams
}

// Sum adds up the samples of a family (see value) whose labels hold
// every pair of match (name, value, name, value…); 0 when there are none.
func (m Metrics) Sum(family string, match ...string) float64 {
	var sum float64
	for _, s := range m[family].GetMetric() {
		if hasLabels(s, match) {
			sum += value(s)
		}
	}
	return sum
}

// By returns, per value of label, the Sum of the samples that carry it
// (and match).
func (m Metrics) By(family, label string, match ...string) map[string]float64 {
	out := map[string]float64{}
	for _, s := range m[family].GetMetric() {
		if !hasLabels(s, match) {
			continue
		}
		for _, l := range s.GetLabel() {
			if l.GetName() == label {
				out[l.GetValue()] += value(s)
			}
		}
	}
	return out
}

// value is a counter's, gauge's or untyped sample's value, and a
// histogram's count of observations.
func value(s *dto.Metric) float64 {
	switch {
	case s.GetHistogram() != nil:
		return float64(s.GetHistogram().GetSampleCount())
	case s.GetCounter() != nil:
		return s.GetCounter().GetValue()
	case s.GetGauge() != nil:
		return s.GetGauge().GetValue()
	default:
		return s.GetUntyped().GetValue()
	}
}

func hasLabels(s *dto.Metric, match []string) bool {
	for i := 0; i+1 < len(match); i += 2 {
		if !slices.ContainsFunc(s.GetLabel(), func(l *dto.LabelPair) bool {
			return l.GetName() == match[i] && l.GetValue() == match[i+1]
		}) {
			return false
		}
	}
	return true
}
