package faults

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/orderly/orderly/pkg/rabbit/rabbittest"
)

// TestChaosBroker stops RabbitMQ (rabbitmqctl stop_app, 5 s, start_app)
// and later closes every connection of the stack's vhost, while the load
// runs. Every replica must be ready and a fresh order confirmed within
// 30 s of each fault, by itself: no process is restarted.
func TestChaosBroker(t *testing.T) {
	sc := newScenario(t, 1000, 2000)
	sc.fault = func(t *testing.T, f *faultRun) {
		before := f.c.pids()
		// Whatever happens to the test, the broker the machine shares is
		// left running.
		stopped := false
		t.Cleanup(func() {
			if stopped {
				rabbittest.Ctl(t, "start_app")
			}
		})

		f.at(0.15)
		t.Logf("stop_app at %s", f.since())
		rabbittest.Ctl(t, "stop_app")
		stopped = true
		time.Sleep(5 * time.Second) // the outage
		rabbittest.Ctl(t, "start_app")
		stopped = false
		t.Logf("start_app done at %s", f.since())
		f.recovered(t, time.Now(), 30*time.Second)

		f.at(0.6)
		vhost := vhostOf(t, f.c.s.AMQPURL)
		t.Logf("close_all_connections of %s at %s", vhost, f.since())
		rabbittest.Ctl(t, "close_all_connections", "--vhost", vhost, "--limit", "100000", "orderly chaos test")
		f.recovered(t, time.Now(), 30*time.Second)

		samePIDs(t, before, f.c.pids())
	}
	sc.run(t)
}

// vhostOf returns the vhost of an AMQP URL.
func vhostOf(t *testing.T, amqpURL string) string {
	t.Helper()
	u, err := url.Parse(amqpURL)
	if err != nil {
		t.Fatalf("AMQP URL %q: %v", amqpURL, err)
	}
	return strings.TrimPrefix(u.Path, "/")
}
