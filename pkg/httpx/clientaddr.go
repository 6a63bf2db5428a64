package httpx

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
)

// TrustedProxies is the set of reverse proxies (load balancers, ingress
// controllers) whose X-Forwarded-For header is believed. The zero value
// trusts nobody: every request's client is its TCP peer.
type TrustedProxies struct {
	prefixes []netip.Prefix
}

// ParseTrustedProxies parses a comma-separated list of CIDRs
// ("10.0.0.0/8") and bare addresses ("192.0.2.10", "2001:db8::1"); spaces
// around entries and empty entries are ignored, so "" trusts nobody. It
// returns an error naming the first entry that is neither.
func ParseTrustedProxies(list string) (TrustedProxies, error) {
	var t TrustedProxies
	for entry := range strings.SplitSeq(list, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		p, err := parsePrefix(entry)
		if err != nil {
			return TrustedProxies{}, fmt.Errorf("%q is not a CIDR or an IP address", entry)
		}
		t.prefixes = append(t.prefixes, p)
	}
	return t, nil
}

// parsePrefix reads a CIDR or a bare address (a /32 or /128), with
// IPv4-mapped IPv6 forms turned into IPv4 so that they match the unmapped
// addresses Resolve compares them with.
func parsePrefix(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("bad address %q", s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if a := p.Addr(); a.Is4In6() {
		if p.Bits() < 96 {
			return netip.Prefix{}, fmt.Errorf("mapped prefix %q wider than IPv4", s)
		}
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// Trusts reports whether a is one of the trusted proxies.
func (t TrustedProxies) Trusts(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	for _, p := range t.prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// String lists the trusted prefixes, comma-separated, for logs.
func (t TrustedProxies) String() string {
	s := make([]string, len(t.prefixes))
	for i, p := range t.prefixes {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// Resolve returns the client address of a request that arrived from peer
// carrying the X-Forwarded-For header lines xff.
//
// Only a trusted peer's header is read: anybody can send X-Forwarded-For,
// so from an untrusted peer it is ignored and the peer is the client. From
// a trusted peer, the header (every line, each split at commas) is walked
// from the right, since each proxy appends the address it received the
// request from and only the entries our own proxies appended can be
// believed. Entries that are trusted proxies are skipped; the first
// untrusted one is the client. An entry that is not an address (empty,
// garbled) ends the walk, and the last trusted hop reached, at worst the
// peer, is the client: a shared key for whoever is behind it is safer than
// an address a client chose. When every entry is trusted, the leftmost is
// the client (a caller inside the trusted network). Entries may carry a
// port ("192.0.2.7:1234", "[2001:db8::7]:1234"), as some load balancers
// add one.
func (t TrustedProxies) Resolve(peer netip.Addr, xff []string) netip.Addr {
	peer = peer.Unmap().WithZone("")
	if !t.Trusts(peer) {
		return peer
	}
	client := peer
	for i := len(xff) - 1; i >= 0; i-- {
		entries := strings.Split(xff[i], ",")
		for j := len(entries) - 1; j >= 0; j-- {
			a, ok := parseForwarded(strings.TrimSpace(entries[j]))
			if !ok {
				return client
			}
			client = a
			if !t.Trusts(a) {
				return a
			}
		}
	}
	return client
}

// parseForwarded reads one X-Forwarded-For entry: an address, optionally
// with a port.
func parseForwarded(s string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil && ap.Addr().Zone() == "" {
		return ap.Addr().Unmap(), true
	}
	return netip.Addr{}, false
}

// Middleware resolves each request's client address (Resolve, from
// r.RemoteAddr and X-Forwarded-For) and stores it in the request context
// for ClientAddr. r.RemoteAddr itself is left alone: it stays the TCP peer,
// which is what net/http and its logs mean by it. A RemoteAddr that is not
// an IP address (a Unix socket) stores nothing.
func (t TrustedProxies) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if peer, ok := remoteAddr(r); ok {
			client := t.Resolve(peer, r.Header.Values("X-Forwarded-For"))
			r = r.WithContext(context.WithValue(r.Context(), clientAddrKey{}, client))
		}
		next.ServeHTTP(w, r)
	})
}

type clientAddrKey struct{}

// ClientAddr returns the client address of r as TrustedProxies.Middleware
// resolved it, or, without that middleware, the host of r.RemoteAddr.
// IPv4-mapped IPv6 addresses come back as IPv4. It returns the invalid
// zero Addr when RemoteAddr is not an IP address (a Unix socket, a test's
// made-up value).
func ClientAddr(r *http.Request) netip.Addr {
	if a, ok := r.Context().Value(clientAddrKey{}).(netip.Addr); ok {
		return a
	}
	a, _ := remoteAddr(r)
	return a
}

// remoteAddr parses r.RemoteAddr, "host:port" or a bare host.
func remoteAddr(r *http.Request) (netip.Addr, bool) {
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		return ap.Addr().Unmap().WithZone(""), true
	}
	if a, err := netip.ParseAddr(r.RemoteAddr); err == nil {
		return a.Unmap().WithZone(""), true
	}
	return netip.Addr{}, false
}
