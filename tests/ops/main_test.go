// Package ops checks what an operator is given in deploy/: the Prometheus
// alert rules parse with Prometheus's own rule parser and every query in
// them and in the Grafana dashboard parses as PromQL (queries_test.go),
// and every metric those queries name is exported by a running service,
// with the labels they group by (metrics_test.go).
package ops

import (
	"testing"

	"github.com/orderly/orderly/tests/stack"
)

func TestMain(m *testing.M) { stack.Main(m) }
