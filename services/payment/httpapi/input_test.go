package httpapi_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/orderly/orderly/pkg/authn"
	"github.com/orderly/orderly/pkg/httpx"
	"github.com/orderly/orderly/pkg/httpx/apitest"
	"github.com/orderly/orderly/services/payment/payment"
)

// The payment API's one identifier, the order_id filter, is refused with a
// 400 when it holds a control character or is not UTF-8, even next to a
// valid id, and the stored payment is untouched.
func TestControlCharactersAreRefused(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, 0)
	admin := tokens.For(t, "operator-1", authn.RoleAdmin)
	p := s.mustInsert(payment.StatusAuthorized, 1500)
	id := p.OrderID.String()
	for _, c := range apitest.ControlChars {
		for _, v := range []string{id + c.Char, c.Char + id, c.Char} {
			pr := mustProblem(t, s.get("/v1/payments?order_id="+url.QueryEscape(v), admin), http.StatusBadRequest, httpx.TypeInvalidParameter)
			if !strings.Contains(pr.Detail, `"order_id"`) || !strings.Contains(pr.Detail, "control character") {
				t.Errorf("order_id %q: detail %q does not name order_id and the control character", v, pr.Detail)
			}
		}
	}
	mustProblem(t, s.get("/v1/payments?order_id=%FF", admin), http.StatusBadRequest, httpx.TypeInvalidParameter)
	if got := mustPayments(t, s.get("/v1/payments?order_id="+id, admin)); len(got) != 1 || got[0].Status != "authorized" {
		t.Errorf("payments after the refusals = %+v, want the one authorized", got)
	}
}
