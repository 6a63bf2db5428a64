package rabbit_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/orderly/orderly/pkg/poll"
	"github.com/orderly/orderly/pkg/rabbit"
	"github.com/orderly/orderly/pkg/rabbit/rabbittest"
)

func TestFindDeadLetterLeavesTheDLQAsItWas(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn := mustDial(t, rabbittest.NewVhost(t), "dlq-find-test")
	q := testQueue("test.find")
	if err := conn.Declare(ctx, rabbit.Topology{Exchanges: []string{"test.events"}, Queues: []rabbit.Queue{q}}); err != nil {
		t.Fatal(err)
	}
	pub := conn.NewPublisher()
	defer pub.Close()
	var dead []rabbit.Message
	for i := range 3 {
		m := msg(i, "a")
		m.Exchange, m.RoutingKey = "", rabbit.DLQName(q.Name)
		m.Headers[rabbit.HeaderError] = fmt.Sprintf("permanent: broken %d", i)
		m.Headers[rabbit.HeaderQueue] = q.Name
		dead = append(dead, m)
	}
	publishAll(t, pub, dead)

	dl, ok, err := conn.FindDeadLetter(ctx, q.Name, "m-1")
	if err != nil || !ok {
		t.Fatalf("find m-1 = %v, %v; want found", ok, err)
	}
	if dl.MessageID != "m-1" || dl.Reason != "permanent: broken 1" || dl.Queue != q.Name ||
		dl.ContentType != "text/plain" || dl.Type != "test.ThingHappened" || string(dl.Body) != "1" {
		t.Errorf("found %+v", dl)
	}
	if _, ok, err := conn.FindDeadLetter(ctx, q.Name, "m-404"); err != nil || ok {
		t.Errorf("find m-404 = %v, %v; want not found", ok, err)
	}
	// Nothing was taken: every message is still there to be listed.
	poll.Until(t, 5*time.Second, "all three still in the DLQ", func() bool {
		all, err := conn.ListDeadLetters(ctx, q.Name, 10)
		return err == nil && len(all) == 3
	})

	_, _, err = conn.FindDeadLetter(ctx, "test.nosuch", "m-1")
	var aerr *amqp.Error
	if !errors.As(err, &aerr) || aerr.Code != amqp.NotFound {
		t.Errorf("find in a missing DLQ: err = %v, want a 404 *amqp.Error", err)
	}
}
