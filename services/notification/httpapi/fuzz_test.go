package httpapi_test

import (
	"bufio"
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/orderly/orderly/pkg/httpx/apitest"
	"github.com/orderly/orderly/services/notification/live"
)

// FuzzWatch sends arbitrary query strings (token and since, repeated,
// empty, percent-encoded or not) and Last-Event-ID headers to both stream
// endpoints of an order. Whatever the input: never a 5xx, every refusal a
// problem, every response one the contract describes, and a stream
// accepted sends only the order's events after since.
func FuzzWatch(f *testing.F) {
	s := newTestServer(f, live.Options{})
	alice, bob := track(alicesOrder), track(bobsOrder)
	for _, seed := range []struct {
		query, lastEventID string
		ws                 bool
	}{
		{"token=" + alice, "", false},
		{"token=" + alice + "&since=1", "", false},
		{"token=" + alice, "0", false},
		{"token=" + alice + "&since=9223372036854775807", "", false},
		{"token=" + alice, "2", true},
		{"token=" + alice + "&since=-1", "", false},
		{"token=" + alice + "&since=1e3", "x", false},
		{"token=" + alice + "&since=%2B1", "", false},
		{"token=" + alice + "&since=99999999999999999999", "", false},
		{"token=" + alice + "&since=1%00", "", false},
		{"token=" + alice + "&token=" + alice, "", false},
		{"token=" + bob, "", false},
		{"token=" + alice[:len(alice)-1], "", true},
		{"token=", "", false}, {"", "", false}, {"since=1", "", true}, {"token=%FF", "", false},
	} {
		f.Add(seed.query, seed.lastEventID, seed.ws)
	}
	f.Fuzz(func(t *testing.T, query, lastEventID string, ws bool) {
		path := "/v1/orders/" + alicesOrder + "/events"
		if ws {
			path = "/v1/orders/" + alicesOrder + "/ws"
		}
		req := apitest.NewQueryRequest(http.MethodGet, path, query)
		// The server takes no control character but a tab in a header.
		if req == nil || strings.ContainsFunc(lastEventID, func(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f }) {
			return
		}
		if lastEventID != "" {
			req.Header.Set("Last-Event-ID", lastEventID)
		}
		r := s.contract.Serve(t, endOnceAccepted(s.handler), req)
		if r.Status != http.StatusOK {
			return
		}
		since := int64(-1)
		if v := req.URL.Query().Get("since"); v != "" {
			since, _ = strconv.ParseInt(v, 10, 64)
		} else if lastEventID != "" {
			since, _ = strconv.ParseInt(lastEventID, 10, 64)
		}
		sc := bufio.NewScanner(strings.NewReader(string(r.Body)))
		for sc.Scan() {
			id, ok := strings.CutPrefix(sc.Text(), "id: ")
			if !ok {
				continue
			}
			if seq, err := strconv.ParseInt(id, 10, 64); err != nil || seq <= since || seq > 2 {
				t.Fatalf("?%s (Last-Event-ID %q) sent event %s; the order has 1 and 2", query, lastEventID, id)
			}
		}
	})
}

// endOnceAccepted serves with h, ending an accepted stream after what it
// sends first, rather than when the order's next change comes.
func endOnceAccepted(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		h.ServeHTTP(cancelOnOK{ResponseWriter: w, cancel: cancel}, r.WithContext(ctx))
	})
}

// cancelOnOK cancels a request's context when its 200 is sent.
type cancelOnOK struct {
	http.ResponseWriter
	cancel context.CancelFunc
}

func (w cancelOnOK) WriteHeader(status int) {
	w.ResponseWriter.WriteHeader(status)
	if status == http.StatusOK {
		w.cancel()
	}
}

// Unwrap lets http.ResponseController reach the recorder's Flush.
func (w cancelOnOK) Unwrap() http.ResponseWriter { return w.ResponseWriter }
