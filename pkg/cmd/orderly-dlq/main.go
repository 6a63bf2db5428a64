// Command orderly-dlq lists, inspects and replays the dead letters of
// Orderly's RabbitMQ queues.
//
// Usage:
//
//	orderly-dlq [-amqp URL] list   -queue Q [-max N] [-json]
//	orderly-dlq [-amqp URL] show   -queue Q -id MESSAGE_ID [-json]
//	orderly-dlq [-amqp URL] replay -queue Q (-id MESSAGE_ID | -all) [-dry-run]
//
// Q is a consumer's queue (for example inventory.order-events); its dead
// letters are in Q.dlq. Reading never removes a message: list and show take
// messages unacknowledged and the broker puts them back when the command
// ends. replay moves messages back to the queue they failed in, removing each
// from the DLQ only after the broker confirmed its republication.
//
// The broker is -amqp, else $AMQP_URL, else amqp://guest:guest@127.0.0.1:5672/.
// The exit status is 0 on success, 1 on a failure and 2 on a usage error; a
// failure is reported as one line on stderr. See docs/operations.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/orderly/orderly/pkg/cmd/internal/cli"
	"github.com/orderly/orderly/pkg/rabbit"
)

const defaultURL = "amqp://guest:guest@127.0.0.1:5672/" //nolint:gosec // the documented local default of AMQP_URL

const usageText = `orderly-dlq lists, inspects and replays dead letters.

Usage:
  orderly-dlq [-amqp URL] list   -queue Q [-max N] [-json]
  orderly-dlq [-amqp URL] show   -queue Q -id MESSAGE_ID [-json]
  orderly-dlq [-amqp URL] replay -queue Q (-id MESSAGE_ID | -all) [-dry-run]

Q is the consumer's queue; its dead letters are in Q.dlq.
The broker is -amqp, else $AMQP_URL, else ` + defaultURL + `.
Run "orderly-dlq COMMAND -h" for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	cli.Exit("orderly-dlq", err)
}

// options are the settings every command shares.
type options struct {
	url     string
	timeout time.Duration
	stdout  io.Writer
	stderr  io.Writer
}

// run executes the command line args (without the program name). It is the
// whole program but for the exit status, so tests call it directly. It reads
// AMQP_URL from the environment when -amqp is not given.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	url := os.Getenv("AMQP_URL")
	if url == "" {
		url = defaultURL
	}
	opts := &options{url: url, stdout: stdout, stderr: stderr}
	fs := flag.NewFlagSet("orderly-dlq", flag.ContinueOnError)
	addCommonFlags(fs, opts)
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		fs.SetOutput(stdout)
		fmt.Fprint(stdout, usageText+"\nFlags (also accepted after the command):\n")
		fs.PrintDefaults()
		return nil
	} else if err != nil {
		return cli.Usagef("%v (orderly-dlq -h for help)", err)
	}
	if fs.NArg() == 0 {
		return cli.Usagef("missing command: list, show or replay (orderly-dlq -h for help)")
	}
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	switch cmd {
	case "list":
		return runList(ctx, opts, rest)
	case "show":
		return runShow(ctx, opts, rest)
	case "replay":
		return runReplay(ctx, opts, rest)
	case "help":
		_, err := io.WriteString(stdout, usageText)
		return err
	}
	return cli.Usagef("unknown command %q: want list, show or replay", cmd)
}

// addCommonFlags registers the connection flags; every command accepts them
// too, so they may come before or after the command name.
func addCommonFlags(fs *flag.FlagSet, o *options) {
	fs.Var(hiddenString{&o.url}, "amqp", "RabbitMQ `URL`, vhost included (default $AMQP_URL, else "+defaultURL+")")
	if o.timeout == 0 {
		o.timeout = 10 * time.Second
	}
	fs.DurationVar(&o.timeout, "timeout", o.timeout, "how long to keep trying to connect to the broker")
}

// hiddenString is a string flag whose value -h does not print: a URL from
// the environment may hold a password.
type hiddenString struct{ p *string }

func (h hiddenString) String() string { return "" }

func (h hiddenString) Set(s string) error {
	*h.p = s
	return nil
}

// parse parses args into fs. It reports done after printing the help that
// -h asked for, and turns any other parse error into one usage line.
func parse(fs *flag.FlagSet, args []string, stdout io.Writer, help string) (done bool, err error) {
	fs.SetOutput(io.Discard)
	err = fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fs.SetOutput(stdout)
		fmt.Fprint(stdout, help)
		fmt.Fprintln(stdout, "\nFlags:")
		fs.PrintDefaults()
		return true, nil
	}
	if err != nil {
		return false, cli.Usagef("%s: %v (orderly-dlq %s -h for help)", fs.Name(), err, fs.Name())
	}
	return false, nil
}

// newCommand returns the flag set of one command, with the common flags and
// -queue, which every command requires.
func newCommand(o *options, name string) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	addCommonFlags(fs, o)
	queue := fs.String("queue", "", "the consumer's `QUEUE`; its dead letters are in QUEUE.dlq (required)")
	return fs, queue
}

func checkArgs(fs *flag.FlagSet, queue string) error {
	if fs.NArg() > 0 {
		return cli.Usagef("%s: unexpected argument %q", fs.Name(), fs.Arg(0))
	}
	if queue == "" {
		return cli.Usagef("%s: -queue is required", fs.Name())
	}
	return nil
}

// connect dials the broker and checks that queue's DLQ exists, returning the
// connection and the number of messages ready in the DLQ. The caller closes
// the connection.
func (o *options) connect(ctx context.Context, queue string) (*rabbit.Conn, int, error) {
	dctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	log := slog.New(slog.NewTextHandler(o.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	conn, err := rabbit.Dial(dctx, o.url, rabbit.WithName("orderly-dlq"), rabbit.WithLogger(log))
	if err != nil {
		return nil, 0, fmt.Errorf("cannot connect to RabbitMQ: %w", err)
	}
	dlq := rabbit.DLQName(queue)
	n, found, err := inspectQueue(ctx, conn, dlq)
	switch {
	case err != nil:
		_ = conn.Close()
		return nil, 0, fmt.Errorf("check %s: %w", dlq, err)
	case !found:
		_ = conn.Close()
		hint := fmt.Sprintf("is %q a consumer queue?", queue)
		if base, ok := strings.CutSuffix(queue, ".dlq"); ok {
			hint = fmt.Sprintf("pass the consumer's queue, -queue %s, not its DLQ", base)
		}
		return nil, 0, fmt.Errorf("dead-letter queue %q does not exist in vhost %q (%s)", dlq, vhostOf(o.url), hint)
	}
	return conn, n, nil
}

// inspectQueue declares name passively: it reports whether the queue exists
// and how many messages are ready in it, and never creates it.
func inspectQueue(ctx context.Context, conn *rabbit.Conn, name string) (ready int, found bool, err error) {
	// A failed passive declare closes the channel, so each check has its own.
	ch, _, err := conn.Channel(ctx)
	if err != nil {
		return 0, false, err
	}
	defer func() { _ = ch.Close() }()
	q, err := ch.QueueDeclarePassive(name, true, false, false, false, nil)
	if isNotFound(err) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	return q.Messages, true, nil
}

func isNotFound(err error) bool {
	var aerr *amqp.Error
	return errors.As(err, &aerr) && aerr.Code == amqp.NotFound
}

func vhostOf(url string) string {
	u, err := amqp.ParseURI(url)
	if err != nil {
		return "?"
	}
	return u.Vhost
}

func runList(ctx context.Context, o *options, args []string) error {
	fs, queue := newCommand(o, "list")
	limit := fs.Int("max", 100, "list at most `N` messages")
	asJSON := fs.Bool("json", false, "print one JSON object per line, with all headers and the body in base64")
	if done, err := parse(fs, args, o.stdout, "Usage: orderly-dlq list -queue Q [-max N] [-json]\n\nLists the dead letters of Q, oldest first, without removing them.\n"); done || err != nil {
		return err
	}
	if err := checkArgs(fs, *queue); err != nil {
		return err
	}
	if *limit < 1 {
		return cli.Usagef("%s: -max must be at least 1", fs.Name())
	}
	conn, ready, err := o.connect(ctx, *queue)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	// One more than asked tells whether the DLQ holds more; the ready count
	// alone can be low while another reader still holds messages.
	dls, err := conn.ListDeadLetters(ctx, *queue, *limit+1)
	if err != nil {
		return err
	}
	more := len(dls) > *limit
	dls = dls[:min(len(dls), *limit)]
	if *asJSON {
		return writeJSONLines(o.stdout, dls)
	}
	total := len(dls)
	if more {
		total = max(ready, len(dls)+1)
	}
	return writeTable(o.stdout, rabbit.DLQName(*queue), dls, total)
}

func runShow(ctx context.Context, o *options, args []string) error {
	fs, queue := newCommand(o, "show")
	id := fs.String("id", "", "the message id (`MESSAGE_ID`) of the dead letter to show (required)")
	asJSON := fs.Bool("json", false, "print one JSON object, with the decoded event under \"event\" when the type is known")
	if done, err := parse(fs, args, o.stdout, "Usage: orderly-dlq show -queue Q -id MESSAGE_ID [-json]\n\nShows one dead letter of Q in full: properties, headers and body, without removing it.\n"); done || err != nil {
		return err
	}
	if err := checkArgs(fs, *queue); err != nil {
		return err
	}
	if *id == "" {
		return cli.Usagef("%s: -id is required", fs.Name())
	}
	conn, _, err := o.connect(ctx, *queue)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	dl, ok, err := conn.FindDeadLetter(ctx, *queue, *id)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("no dead letter with message id %q in %s", *id, rabbit.DLQName(*queue))
	}
	if *asJSON {
		return writeJSONShow(o.stdout, dl)
	}
	return writeShow(o.stdout, dl)
}

func runReplay(ctx context.Context, o *options, args []string) error {
	fs, queue := newCommand(o, "replay")
	id := fs.String("id", "", "replay the dead letter with this `MESSAGE_ID`")
	all := fs.Bool("all", false, "replay every dead letter of the queue")
	dryRun := fs.Bool("dry-run", false, "only print what would be replayed; move nothing")
	if done, err := parse(fs, args, o.stdout, "Usage: orderly-dlq replay -queue Q (-id MESSAGE_ID | -all) [-dry-run]\n\nMoves dead letters of Q back to the queue they failed in, with their retry count reset.\n"); done || err != nil {
		return err
	}
	if err := checkArgs(fs, *queue); err != nil {
		return err
	}
	if (*id == "") == !*all {
		return cli.Usagef("%s: give exactly one of -id MESSAGE_ID and -all", fs.Name())
	}
	conn, _, err := o.connect(ctx, *queue)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	dlq := rabbit.DLQName(*queue)

	// The broker drops, and confirms, a message published to a queue that
	// does not exist; replaying into one would lose the message. So each
	// source queue is checked first, and its messages stay in the DLQ when
	// it is missing.
	exists := map[string]bool{}
	missing := map[string]int{}
	var checkErr error
	selected := 0
	match := func(dl rabbit.DeadLetter) bool {
		if *id != "" && dl.MessageID != *id {
			return false
		}
		ok, seen := exists[dl.Queue]
		if !seen {
			var err error
			if _, ok, err = inspectQueue(ctx, conn, dl.Queue); err != nil {
				if checkErr == nil {
					checkErr = fmt.Errorf("check source queue %s: %w", dl.Queue, err)
				}
				return false
			}
			exists[dl.Queue] = ok
		}
		if !ok {
			missing[dl.Queue]++
			return false
		}
		selected++
		if *dryRun {
			fmt.Fprintf(o.stdout, "would replay %s (%s) to %s\n", dl.MessageID, orDash(dl.Type), dl.Queue)
			return false
		}
		return true
	}
	n, err := conn.ReplayDeadLetters(ctx, *queue, match)
	if *dryRun {
		fmt.Fprintf(o.stdout, "dry run: would replay %d dead letter(s) from %s; nothing was moved\n", selected, dlq)
	} else if n > 0 || err == nil {
		fmt.Fprintf(o.stdout, "replayed %d dead letter(s) from %s\n", n, dlq)
	}
	if err != nil {
		return err
	}
	if checkErr != nil {
		return checkErr
	}
	if len(missing) > 0 {
		var parts []string
		for _, q := range slices.Sorted(maps.Keys(missing)) {
			parts = append(parts, fmt.Sprintf("%d for %q", missing[q], q))
		}
		return fmt.Errorf("left %s in %s: the source queue does not exist (start its consumer, then replay again)", strings.Join(parts, ", "), dlq)
	}
	if *id != "" && selected == 0 {
		return fmt.Errorf("no dead letter with message id %q in %s", *id, dlq)
	}
	return nil
}
