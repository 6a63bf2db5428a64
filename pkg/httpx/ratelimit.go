package httpx

import (
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/go-chi/httprate"
)

// TypeRateLimited is the problem type of a 429 from RateLimit.
var TypeRateLimited = ProblemType("rate-limited")

// RateLimit returns middleware that lets each key (from key, or CallerKey
// when key is nil) make at most requestsPerSecond requests in any sliding
// one-second window. A request over the limit gets 429 with a problem of
// type TypeRateLimited and a Retry-After header in whole seconds (at least
// 1); every response carries the X-RateLimit-Limit, -Remaining and -Reset
// headers. Counters live in this process, so with N replicas behind a load
// balancer a key gets up to N times the limit. A requestsPerSecond of 0 or
// less turns limiting off.
func RateLimit(requestsPerSecond int, key func(*http.Request) string) func(http.Handler) http.Handler {
	if requestsPerSecond <= 0 {
		return func(next http.Handler) http.Handler { return next }
	}
	if key == nil {
		key = CallerKey
	}
	return httprate.LimitBy(requestsPerSecond, time.Second,
		func(r *http.Request) (string, error) { return key(r), nil },
		httprate.WithLimitHandler(func(w http.ResponseWriter, r *http.Request) {
			// httprate sets Retry-After to the window length; make sure a
			// client never reads "0" as "retry at once".
			if s, err := strconv.Atoi(w.Header().Get("Retry-After")); err != nil || s < 1 {
				w.Header().Set("Retry-After", "1")
			}
			WriteProblem(w, r, http.StatusTooManyRequests, TypeRateLimited, "Too many requests",
				"request rate limit exceeded; retry after the time in Retry-After")
		}),
		// The in-memory counter never fails; a custom one might, and then
		// the request is refused rather than let through unmetered.
		httprate.WithErrorHandler(func(w http.ResponseWriter, r *http.Request, _ error) {
			WriteProblem(w, r, http.StatusInternalServerError, TypeInternal,
				http.StatusText(http.StatusInternalServerError), "internal error")
		}),
	)
}

// CallerKey is the default rate-limit key: "ip:" and the client address
// (ClientAddr: the address TrustedProxies.Middleware resolved, else the
// host of r.RemoteAddr), with IPv6 addresses reduced to their /64 (one
// client usually holds a whole /64). X-Forwarded-For counts only through
// that middleware, which believes it from trusted proxies alone, since any
// client can set it. Authenticated APIs key by subject instead
// (authn.SubjectKey), which falls back to this; so do other per-client
// limits, which must use this key to agree with the rate limiter.
func CallerKey(r *http.Request) string {
	a := ClientAddr(r)
	switch {
	case a.Is4():
		return "ip:" + a.String()
	case a.Is6():
		return "ip:" + netip.PrefixFrom(a, 64).Masked().Addr().String()
	}
	// Not an IP address (a Unix socket): the raw value is all there is.
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	return "ip:" + httprate.CanonicalizeIP(host)
}
