package httpapi_test

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/orderly/orderly/pkg/httpx/apitest"
	"github.com/orderly/orderly/pkg/poll"
	"github.com/orderly/orderly/services/notification/live"
)

// Every identifier the notification API takes (the order id of the streams
// and the page, ?token=, ?since=) is refused with a 400 when it holds a
// control character, before any stream opens.
func TestControlCharactersAreRefused(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, live.Options{})
	tok := track(alicesOrder)
	for _, c := range apitest.ControlChars {
		for _, tt := range []struct {
			name string
			a    attempt
		}{
			{"order id of the WebSocket", attempt{path: "/v1/orders/" + url.PathEscape(alicesOrder+c.Char) + "/ws?token=" + tok, ws: true}},
			{"order id of the event stream", attempt{path: "/v1/orders/" + url.PathEscape(c.Char+alicesOrder) + "/events?token=" + tok}},
			{"order id of the page", attempt{path: "/track/" + url.PathEscape(alicesOrder+c.Char)}},
			{"token", attempt{path: "/v1/orders/" + alicesOrder + "/ws?token=" + url.QueryEscape(tok+c.Char), ws: true}},
			{"token of the page", attempt{path: "/track/" + alicesOrder + "?token=" + url.QueryEscape(c.Char+tok)}},
			{"since", attempt{path: "/v1/orders/" + alicesOrder + "/events?since=" + url.QueryEscape("1"+c.Char) + "&token=" + tok}},
		} {
			r := s.do(tt.a)
			if r.status != 400 || problemType(t, r) != "invalid-parameter" || !strings.Contains(r.body, "control character") {
				t.Errorf("%s with %s: %d %s, want 400 invalid-parameter naming the control character", tt.name, c.Name, r.status, r.body)
			}
		}
	}
	poll.Until(t, 5*time.Second, "no stream to be open", func() bool {
		st := s.hub.Stats()
		return st.WebSocket+st.SSE == 0
	})
}
