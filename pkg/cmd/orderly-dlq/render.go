package main

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/orderly/orderly/pkg/rabbit"
	eventsv1 "github.com/orderly/orderly/proto/orderly/events/v1"
)

// deliveryCountHeader is set by quorum queues on every hand-out after the first.
const deliveryCountHeader = "x-delivery-count"

// maxReason bounds the reason column of the table; show prints it in full.
const maxReason = 60

// writeTable prints dls as a table followed by a count; total is how many
// messages the DLQ holds, as far as the broker said.
func writeTable(w io.Writer, dlq string, dls []rabbit.DeadLetter, total int) error {
	if len(dls) == 0 {
		_, err := fmt.Fprintf(w, "no dead letters in %s\n", dlq)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MESSAGE ID\tTYPE\tSOURCE QUEUE\tREASON\tTIMESTAMP\tBYTES")
	for _, dl := range dls {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\n", orDash(oneLine(dl.MessageID, 0)), orDash(oneLine(dl.Type, 0)),
			dl.Queue, orDash(oneLine(dl.Reason, maxReason)), timestamp(dl.Timestamp), len(dl.Body))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var err error
	if total > len(dls) {
		_, err = fmt.Fprintf(w, "showing %d of %d dead letters in %s (raise -max to see more)\n", len(dls), total, dlq)
	} else {
		_, err = fmt.Fprintf(w, "%d dead letter(s) in %s\n", len(dls), dlq)
	}
	return err
}

// record is the JSON form of a dead letter. Body is base64, as encoding/json
// writes a []byte.
type record struct {
	MessageID   string          `json:"message_id"`
	Type        string          `json:"type"`
	ContentType string          `json:"content_type"`
	Queue       string          `json:"queue"`
	Reason      string          `json:"reason"`
	Timestamp   time.Time       `json:"timestamp,omitzero"`
	Size        int             `json:"size"`
	Headers     amqp.Table      `json:"headers"`
	Body        []byte          `json:"body"`
	Event       json.RawMessage `json:"event,omitempty"`
}

func recordOf(dl rabbit.DeadLetter) record {
	h := dl.Headers
	if h == nil {
		h = amqp.Table{}
	}
	return record{MessageID: dl.MessageID, Type: dl.Type, ContentType: dl.ContentType, Queue: dl.Queue,
		Reason: dl.Reason, Timestamp: dl.Timestamp.UTC(), Size: len(dl.Body), Headers: h, Body: dl.Body}
}

// writeJSONLines prints one JSON object per dead letter and line.
func writeJSONLines(w io.Writer, dls []rabbit.DeadLetter) error {
	enc := json.NewEncoder(w)
	for _, dl := range dls {
		if err := enc.Encode(recordOf(dl)); err != nil {
			return fmt.Errorf("encode %s: %w", dl.MessageID, err)
		}
	}
	return nil
}

// writeJSONShow prints dl as one JSON object, with the decoded event as
// protojson under "event" when its type is a known event that decodes.
func writeJSONShow(w io.Writer, dl rabbit.DeadLetter) error {
	r := recordOf(dl)
	if msg, err := decodeEvent(dl.Type, dl.Body); msg != nil && err == nil {
		b, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(msg)
		if err != nil {
			return fmt.Errorf("encode %s as protojson: %w", dl.Type, err)
		}
		r.Event = b
	}
	return json.NewEncoder(w).Encode(r)
}

// writeShow prints everything about dl for a person: properties, every header
// (nested tables such as x-death included) and the body, as protojson when it
// is a known event and as a hex dump otherwise.
func writeShow(w io.Writer, dl rabbit.DeadLetter) error {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	for _, row := range [][2]string{
		{"Message ID:", orDash(dl.MessageID)},
		{"Type:", orDash(dl.Type)},
		{"Content type:", orDash(dl.ContentType)},
		{"Timestamp:", timestamp(dl.Timestamp)},
		{"Source queue:", dl.Queue},
		{"Reason:", orDash(oneLine(dl.Reason, 0))},
		{"Body size:", fmt.Sprintf("%d bytes", len(dl.Body))},
	} {
		fmt.Fprintf(tw, "%s\t%s\n", row[0], row[1])
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var b strings.Builder
	b.WriteString("\nHeaders:\n")
	if len(dl.Headers) == 0 {
		b.WriteString("  (none)\n")
	}
	for _, k := range slices.Sorted(maps.Keys(dl.Headers)) {
		writeEntry(&b, "  ", "  ", k, dl.Headers[k])
		if k == deliveryCountHeader {
			// The DLQ counts its own hand-outs, so every list or show
			// raises this; attempts in the source queue are in x-death.
			s := strings.TrimSuffix(b.String(), "\n")
			b.Reset()
			b.WriteString(s + "  # reads of this DLQ copy (list, show, dry runs), not delivery attempts\n")
		}
	}

	msg, err := decodeEvent(dl.Type, dl.Body)
	switch {
	case len(dl.Body) == 0:
		b.WriteString("\nBody: empty\n")
	case msg != nil && err == nil:
		js, err := protojson.MarshalOptions{Multiline: true, Indent: "  ", UseProtoNames: true, EmitUnpopulated: true}.Marshal(msg)
		if err != nil {
			return fmt.Errorf("encode %s as protojson: %w", dl.Type, err)
		}
		fmt.Fprintf(&b, "\nBody (%s, as protojson):\n%s\n", dl.Type, js)
		if unknown := msg.ProtoReflect().GetUnknown(); len(unknown) > 0 {
			// Fields this build does not know: a newer schema, or a body
			// that only happens to parse. Show the bytes too.
			fmt.Fprintf(&b, "\nThe body also holds %d bytes of fields %s does not define; raw body (hex):\n%s", len(unknown), dl.Type, hex.Dump(dl.Body))
		}
	case err != nil:
		fmt.Fprintf(&b, "\nBody (hex; it does not decode as %s: %v):\n%s", dl.Type, err, hex.Dump(dl.Body))
	default:
		fmt.Fprintf(&b, "\nBody (hex):\n%s", hex.Dump(dl.Body))
	}
	_, err = io.WriteString(w, b.String())
	return err
}

// decodeEvent decodes body when typ names a known event. It returns a nil
// message and no error for any other type, and an error when the body does
// not decode as the event typ names.
func decodeEvent(typ string, body []byte) (proto.Message, error) {
	if _, ok := eventsv1.RouteByType(typ); !ok {
		return nil, nil
	}
	return eventsv1.Unmarshal(typ, body)
}

// writeTableValue writes the entries of t, sorted by key, one per line; the
// first line starts with first and the others with indent, so a table can
// open a list item ("- key: value").
func writeTableValue(b *strings.Builder, first, indent string, t amqp.Table) {
	prefix := first
	for _, k := range slices.Sorted(maps.Keys(t)) {
		writeEntry(b, prefix, indent, k, t[k])
		prefix = indent
	}
}

func writeEntry(b *strings.Builder, prefix, indent, key string, v any) {
	switch v := v.(type) {
	case amqp.Table:
		if len(v) == 0 {
			fmt.Fprintf(b, "%s%s: {}\n", prefix, key)
			return
		}
		fmt.Fprintf(b, "%s%s:\n", prefix, key)
		writeTableValue(b, indent+"  ", indent+"  ", v)
	case []any:
		if items, ok := scalars(v); ok {
			fmt.Fprintf(b, "%s%s: [%s]\n", prefix, key, strings.Join(items, ", "))
			return
		}
		fmt.Fprintf(b, "%s%s:\n", prefix, key)
		for _, item := range v {
			if t, ok := item.(amqp.Table); ok {
				writeTableValue(b, indent+"  - ", indent+"    ", t)
				continue
			}
			// A list inside a list: rare enough to print on one line.
			fmt.Fprintf(b, "%s  - %v\n", indent, item)
		}
	default:
		s, _ := scalar(v)
		fmt.Fprintf(b, "%s%s: %s\n", prefix, key, s)
	}
}

func scalars(list []any) ([]string, bool) {
	out := make([]string, 0, len(list))
	for _, v := range list {
		s, ok := scalar(v)
		if !ok {
			return nil, false
		}
		out = append(out, s)
	}
	return out, true
}

// scalar formats a header value that is not a table or a list.
func scalar(v any) (string, bool) {
	switch v := v.(type) {
	case nil:
		return "null", true
	case string:
		return strconv.Quote(v), true
	case []byte:
		if utf8.Valid(v) {
			return strconv.Quote(string(v)), true
		}
		return "0x" + hex.EncodeToString(v), true
	case time.Time:
		return v.UTC().Format(time.RFC3339), true
	case amqp.Decimal:
		return fmt.Sprintf("%de-%d", v.Value, v.Scale), true
	case amqp.Table, []any:
		return "", false
	}
	return fmt.Sprint(v), true
}

func timestamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// oneLine makes s safe for one table cell: control characters become spaces,
// and it is cut to limit runes when limit > 0.
func oneLine(s string, limit int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	if limit > 0 && utf8.RuneCountInString(s) > limit {
		s = string([]rune(s)[:limit-1]) + "…"
	}
	return s
}
