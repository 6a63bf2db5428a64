package httpx

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/orderly/orderly/pkg/telemetry"
)

var (
	errNotFound       = errors.New("order not found")
	errNotCancellable = errors.New("order can no longer be cancelled")
	errUnavailable    = errors.New("payment gateway unavailable")
	testProblemTable  = []ErrorMapping{
		{Err: errNotFound, Status: http.StatusNotFound, Type: ProblemType("order-not-found"), Title: "Order not found"},
		{Err: errNotCancellable, Status: http.StatusConflict, Type: ProblemType("order-not-cancellable"), Title: "Order cannot be cancelled"},
		{Err: errUnavailable, Status: http.StatusServiceUnavailable, Type: ProblemType("unavailable"), Title: "Service unavailable"},
	}
)

type fieldError struct{ field string }

func (e fieldError) Error() string         { return "validate: " + e.field + " is bad (row 17 in pg)" }
func (e fieldError) ProblemDetail() string { return e.field + " must be between 1 and 1000" }

func TestWriteProblemShape(t *testing.T) {
	t.Parallel()
	req := httptest.NewRequest(http.MethodGet, "/v1/orders/42?token=secret", nil)
	rec := httptest.NewRecorder()
	WriteProblem(rec, req, http.StatusNotFound, TypeNotFound, "Not found", "no order 42")

	if rec.Code != http.StatusNotFound {
		t.Errorf("status = %d, want 404", rec.Code)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type = %q", ct)
	}
	var got map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatalf("body %q: %v", rec.Body, err)
	}
	want := map[string]any{
		"type":     "https://orderly.dev/problems/not-found",
		"title":    "Not found",
		"status":   float64(404),
		"detail":   "no order 42",
		"instance": "/v1/orders/42",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("body = %v, want %v", got, want)
	}
}

func TestWriteError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		err        error
		wantStatus int
		wantType   string
		wantDetail string
	}{
		{"sentinel wrapped", fmt.Errorf("get order 42: query: %w", errNotFound), 404, ProblemType("order-not-found"), "order not found"},
		{"second row", fmt.Errorf("cancel: %w", errNotCancellable), 409, ProblemType("order-not-cancellable"), "order can no longer be cancelled"},
		{"detailer", fmt.Errorf("place: %w", errors.Join(errNotCancellable, fieldError{"items[0].quantity"})), 409, ProblemType("order-not-cancellable"), "items[0].quantity must be between 1 and 1000"},
		{"decode error without table row", &DecodeError{kind: ErrBodyTooLarge, detail: "too big"}, 413, TypeBodyTooLarge, "too big"},
		{"mapped 5xx hides detail", fmt.Errorf("authorize: dial 10.0.0.7: %w", errUnavailable), 503, ProblemType("unavailable"), "internal error"},
		{"unmatched", errors.New(`pq: relation "orders" does not exist at 10.0.0.5`), 500, TypeInternal, "internal error"},
		{"statement timeout", fmt.Errorf("list orders: %w", &pgconn.PgError{Code: "57014", Message: "canceling statement due to statement timeout"}), 503, TypeUnavailable, "the database is busy; retry shortly"},
		{"lock timeout", fmt.Errorf("cancel order: %w", &pgconn.PgError{Code: "55P03", Message: "canceling statement due to lock timeout"}), 503, TypeUnavailable, "the database is busy; retry shortly"},
		{"database shutting down", fmt.Errorf("place order: %w", &pgconn.PgError{Code: "57P01", Message: "terminating connection due to administrator command"}), 503, TypeUnavailable, "the database is unavailable; retry shortly"},
		{"connection lost", fmt.Errorf("place order: commit: %w", io.ErrUnexpectedEOF), 503, TypeUnavailable, "the database is unavailable; retry shortly"},
		{"out of time", fmt.Errorf("place order: %w", context.DeadlineExceeded), 503, TypeUnavailable, "the request ran out of time; retry shortly"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var logs bytes.Buffer
			logger, err := telemetry.NewLogger(&logs, "test", "debug")
			if err != nil {
				t.Fatal(err)
			}
			req := httptest.NewRequest(http.MethodPost, "/v1/orders", nil)
			rec := httptest.NewRecorder()
			WriteError(rec, req, logger, tt.err, testProblemTable)

			if rec.Code != tt.wantStatus {
				t.Fatalf("status = %d, want %d", rec.Code, tt.wantStatus)
			}
			body := rec.Body.String()
			p := mustProblem(t, rec)
			if p.Type != tt.wantType || p.Detail != tt.wantDetail {
				t.Errorf("problem = %+v, want type %q detail %q", p, tt.wantType, tt.wantDetail)
			}
			if got, want := rec.Header().Get("Retry-After"), map[bool]string{true: "1"}[tt.wantType == TypeUnavailable && tt.wantDetail != "internal error"]; got != want {
				t.Errorf("Retry-After = %q, want %q", got, want)
			}
			if tt.wantStatus >= 500 {
				if strings.Contains(body, "10.0.0") {
					t.Errorf("5xx body leaks internals: %s", body)
				}
				var line struct{ Err string }
				if err := json.Unmarshal(logs.Bytes(), &line); err != nil || line.Err != tt.err.Error() {
					t.Errorf("log err = %q (%v), want %q", line.Err, err, tt.err)
				}
			} else if logs.Len() != 0 {
				t.Errorf("4xx was logged: %s", logs.String())
			}
		})
	}
}

func TestWriteErrorClientGoneIsNotAnError(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	logger, err := telemetry.NewLogger(&logs, "test", "debug")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req := httptest.NewRequestWithContext(ctx, http.MethodGet, "/v1/orders", nil)
	WriteError(httptest.NewRecorder(), req, logger, fmt.Errorf("list orders: %w", context.Canceled), nil)

	var line struct{ Level string }
	if err := json.Unmarshal(logs.Bytes(), &line); err != nil || line.Level != "INFO" {
		t.Errorf("log level = %q (%v), want INFO; log %s", line.Level, err, logs.String())
	}
}
