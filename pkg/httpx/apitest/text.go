package apitest

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"
)

// ControlChars are one character of each class that httpx.CheckText
// refuses in identifiers and names, for the table tests of every API: the
// NUL that PostgreSQL rejects, a bell, an escape (terminal sequences), DEL
// and a newline (forged log lines).
var ControlChars = []struct{ Name, Char string }{
	{"NUL", "\x00"},
	{"BEL", "\a"},
	{"ESC", "\x1b"},
	{"DEL", "\x7f"},
	{"newline", "\n"},
}

// RawStatus sends a request with header name set to value byte for byte,
// which Go's client refuses to do for control characters, to the server
// at base (http://host:port), and returns the status of the answer. (Go's
// server answers such a header with a plain 400 of its own, before any
// handler runs; a newline ends the header line and leaves a malformed one.)
func RawStatus(tb testing.TB, base, method, path, name, value string) int {
	tb.Helper()
	u, err := url.Parse(base)
	if err != nil {
		tb.Fatal(err)
	}
	conn, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	req := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: %s\r\n%s: %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
		method, path, u.Host, name, value)
	if _, err := conn.Write([]byte(req)); err != nil {
		tb.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		tb.Fatalf("%s %s with %s %q: %v", method, path, name, value, err)
	}
	defer resp.Body.Close()
	return resp.StatusCode
}
