package httpx

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestServeAndDrain(t *testing.T) {
	t.Parallel()
	started, release := make(chan struct{}), make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		_, _ = io.WriteString(w, "done")
	})
	srv, err := Serve(context.Background(), "127.0.0.1:0", mux, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if strings.HasSuffix(srv.Addr(), ":0") {
		t.Fatalf("Addr() = %q, want the bound port", srv.Addr())
	}

	type result struct {
		body string
		err  error
	}
	resc := make(chan result, 1)
	go func() {
		resp, err := http.Get("http://" + srv.Addr() + "/slow")
		if err != nil {
			resc <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		resc <- result{string(b), err}
	}()
	<-started

	shutdownc := make(chan error, 1)
	go func() { shutdownc <- srv.Shutdown(context.Background()) }()
	select {
	case err := <-shutdownc:
		t.Fatalf("Shutdown returned (%v) with a request in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)

	if res := <-resc; res.err != nil || res.body != "done" {
		t.Errorf("in-flight request got %q, %v; want it to finish", res.body, res.err)
	}
	if err := <-shutdownc; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	select {
	case err := <-srv.Err():
		t.Errorf("Err() after Shutdown delivered %v", err)
	default:
	}
	if resp, err := http.Get("http://" + srv.Addr() + "/slow"); err == nil {
		resp.Body.Close()
		t.Error("server still accepts connections after Shutdown")
	}
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
}

func TestShutdownDeadlineClosesStragglers(t *testing.T) {
	t.Parallel()
	started := make(chan struct{})
	srv, err := Serve(context.Background(), "127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done() // only a closed connection ends this handler
	}), nil)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		if resp, err := http.Get("http://" + srv.Addr()); err == nil {
			resp.Body.Close()
		}
	}()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want DeadlineExceeded", err)
	}
}

func TestServeReportsListenError(t *testing.T) {
	t.Parallel()
	srv, err := Serve(context.Background(), "127.0.0.1:0", http.NotFoundHandler(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	if _, err := Serve(context.Background(), srv.Addr(), http.NotFoundHandler(), nil); err == nil {
		t.Errorf("second Serve on %s succeeded, want address-in-use error", srv.Addr())
	}
}

// TestDisableDeadlinesKeepsStreamsOpen runs a stream through the full
// middleware stack, whose response-writer wrappers must still let the handler
// reach the connection's deadlines.
func TestDisableDeadlinesKeepsStreamsOpen(t *testing.T) {
	t.Parallel()
	tr := newTestRouter(t)
	tr.mux.Get("/stream", func(w http.ResponseWriter, r *http.Request) {
		if err := DisableDeadlines(w); err != nil {
			t.Errorf("DisableDeadlines: %v", err)
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 4 {
			if _, err := io.WriteString(w, "data: tick\n\n"); err != nil {
				return
			}
			http.NewResponseController(w).Flush()
			if i < 3 {
				time.Sleep(150 * time.Millisecond)
			}
		}
	})
	short := 200 * time.Millisecond
	srv, err := serve(context.Background(), "127.0.0.1:0", tr.mux, nil, nil, timeouts{readHeader: short, read: short, write: short, idle: short})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })

	resp, err := http.Get("http://" + srv.Addr() + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ticks int
	for sc := bufio.NewScanner(resp.Body); sc.Scan(); {
		if sc.Text() == "data: tick" {
			ticks++
		}
	}
	if ticks != 4 {
		t.Errorf("got %d events over 450ms with 200ms server timeouts, want 4", ticks)
	}
}
