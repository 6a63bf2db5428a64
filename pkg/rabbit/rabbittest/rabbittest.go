// Package rabbittest gives a test its own RabbitMQ virtual host on the real
// broker, so tests never see each other's queues, and removes it afterwards.
package rabbittest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"os/exec"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/protobuf/proto"

	"github.com/orderly/orderly/pkg/rabbit"
)

// BaseURL is the broker tests use, from ORDERLY_TEST_AMQP_URL or the local default.
func BaseURL() string {
	if u := os.Getenv("ORDERLY_TEST_AMQP_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
}

// NewVhost creates a uniquely named vhost, grants the test user every
// permission on it and returns the AMQP URL for it. The vhost and everything
// in it is deleted when tb ends. It fails the test when rabbitmqctl cannot
// reach the broker.
func NewVhost(tb testing.TB) string {
	tb.Helper()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "orderly_test_" + hex.EncodeToString(b)
	u, err := url.Parse(BaseURL())
	if err != nil {
		tb.Fatalf("rabbittest: parse %s: %v", BaseURL(), err)
	}
	user := u.User.Username()
	Ctl(tb, "add_vhost", name)
	tb.Cleanup(func() { Ctl(tb, "delete_vhost", name) })
	Ctl(tb, "set_permissions", "-p", name, user, ".*", ".*", ".*")
	u.Path = "/" + name
	return u.String()
}

// Ctl runs rabbitmqctl with args and fails the test on error.
func Ctl(tb testing.TB, args ...string) string {
	tb.Helper()
	out, err := exec.Command("rabbitmqctl", append([]string{"-q"}, args...)...).CombinedOutput()
	if err != nil {
		tb.Fatalf("rabbitmqctl %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// One adapts a batch handler to a single message, the way a consumer hands
// over a message that arrived alone, for tests that send one at a time.
func One(h rabbit.BatchHandler) rabbit.Handler {
	return func(ctx context.Context, d *amqp.Delivery) error {
		return h(ctx, []rabbit.Delivery{{Ctx: ctx, Delivery: d}})[0]
	}
}

// AddSeeds adds each message to the seed corpus of a fuzz target that takes
// a delivery's type and body (func(t *testing.T, typ string, body []byte)),
// as the relay would send it: typed with its full protobuf name. It adds
// what every consumer must refuse too: a corrupt body of each message's
// type and a type that does not exist.
func AddSeeds(f *testing.F, msgs ...proto.Message) {
	f.Helper()
	for _, m := range msgs {
		body, err := proto.Marshal(m)
		if err != nil {
			f.Fatalf("marshal %T: %v", m, err)
		}
		typ := string(m.ProtoReflect().Descriptor().FullName())
		f.Add(typ, body)
		f.Add(typ, []byte{0xff, 0xff})
	}
	f.Add("orderly.events.v1.Nope", []byte(nil))
}
