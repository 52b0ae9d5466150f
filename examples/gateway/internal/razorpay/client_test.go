package razorpay_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/keyledger/keyledger/examples/gateway/internal/razorpay"
	"github.com/keyledger/keyledger/examples/gateway/internal/razorpay/razorpaytest"
)

func newClient(t *testing.T, timeout time.Duration) (*razorpay.Client, *razorpaytest.Fake) {
	t.Helper()
	f := razorpaytest.New(t, "rzp_test_client", "client-secret")
	c, err := razorpay.NewClient(f.KeyID, f.Secret, &razorpay.ClientOptions{BaseURL: f.URL(), Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	return c, f
}

func TestClientOrderPaymentCapture(t *testing.T) {
	ctx := context.Background()
	c, f := newClient(t, 5*time.Second)
	o, err := c.CreateOrder(ctx, razorpay.OrderRequest{Amount: 50000, Receipt: "r1", Notes: map[string]string{"account_id": "acct_1"}})
	if err != nil {
		t.Fatal(err)
	}
	if o.Status != razorpay.OrderCreated || o.Amount != 50000 || o.Currency != "INR" || !razorpay.ValidOrderID(o.ID) {
		t.Fatalf("order: %+v", o)
	}
	resp, _, err := f.Pay(o.ID, razorpay.PaymentAuthorized)
	if err != nil {
		t.Fatal(err)
	}
	if err := razorpay.VerifyPaymentSignature(o.ID, resp.PaymentID, resp.Signature, f.Secret); err != nil {
		t.Fatal(err)
	}
	p, err := c.FetchPayment(ctx, resp.PaymentID)
	if err != nil || p.Status != razorpay.PaymentAuthorized || p.Amount != 50000 || p.OrderID != o.ID {
		t.Fatalf("fetch: %+v, %v", p, err)
	}
	p, err = c.CapturePayment(ctx, p.ID, p.Amount, p.Currency)
	if err != nil || p.Status != razorpay.PaymentCaptured || !p.Captured {
		t.Fatalf("capture: %+v, %v", p, err)
	}
	// A second capture is Razorpay's BAD_REQUEST_ERROR: rejected, not retryable.
	_, err = c.CapturePayment(ctx, p.ID, p.Amount, p.Currency)
	var ae *razorpay.APIError
	if !errors.Is(err, razorpay.ErrRejected) || !errors.As(err, &ae) || ae.Code != "BAD_REQUEST_ERROR" || ae.Status != 400 {
		t.Fatalf("second capture: %v", err)
	}
}

func TestClientRecurring(t *testing.T) {
	ctx := context.Background()
	c, f := newClient(t, 5*time.Second)
	cu, err := c.CreateCustomer(ctx, razorpay.CustomerRequest{Name: "Asha", Email: "asha@example.com", FailExisting: "0"})
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.CreateCustomer(ctx, razorpay.CustomerRequest{Name: "Asha", Email: "asha@example.com", FailExisting: "0"})
	if err != nil || again.ID != cu.ID {
		t.Fatalf("fail_existing=0 must return the same customer: %v %v", again, err)
	}
	first, err := c.CreateOrder(ctx, razorpay.OrderRequest{Amount: 10000, CustomerID: cu.ID, PaymentCapture: true})
	if err != nil {
		t.Fatal(err)
	}
	_, paid, err := f.Pay(first.ID, razorpay.PaymentCaptured)
	if err != nil || paid.TokenID == "" || paid.CustomerID != cu.ID {
		t.Fatalf("first payment saves no token: %+v %v", paid, err)
	}
	next, err := c.CreateOrder(ctx, razorpay.OrderRequest{Amount: 20000, CustomerID: cu.ID, PaymentCapture: true})
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.CreateRecurringPayment(ctx, razorpay.RecurringRequest{Email: "asha@example.com", Amount: 20000,
		OrderID: next.ID, CustomerID: cu.ID, Token: paid.TokenID})
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.FetchPayment(ctx, r.PaymentID)
	if err != nil || p.Status != razorpay.PaymentCaptured || p.Amount != 20000 {
		t.Fatalf("recurring payment: %+v %v", p, err)
	}
	// An unknown token is rejected.
	third, _ := c.CreateOrder(ctx, razorpay.OrderRequest{Amount: 20000, CustomerID: cu.ID})
	_, err = c.CreateRecurringPayment(ctx, razorpay.RecurringRequest{Email: "asha@example.com", Amount: 20000,
		OrderID: third.ID, CustomerID: cu.ID, Token: "token_00000000000000"})
	if !errors.Is(err, razorpay.ErrRejected) {
		t.Fatalf("unknown token: %v", err)
	}
}

func TestClientFailures(t *testing.T) {
	ctx := context.Background()
	c, f := newClient(t, 300*time.Millisecond)
	req := razorpay.OrderRequest{Amount: 10000}

	f.FailNext(razorpaytest.RouteCreateOrder, http.StatusInternalServerError, "SERVER_ERROR", "We are facing some trouble completing your request at the moment.")
	_, err := c.CreateOrder(ctx, req)
	var ae *razorpay.APIError
	if !errors.Is(err, razorpay.ErrUnavailable) || !errors.As(err, &ae) || ae.Code != "SERVER_ERROR" {
		t.Fatalf("5xx: %v", err)
	}
	f.FailNext(razorpaytest.RouteCreateOrder, http.StatusBadGateway, "GATEWAY_ERROR", "upstream")
	if _, err := c.CreateOrder(ctx, req); !errors.Is(err, razorpay.ErrUnavailable) {
		t.Fatalf("502: %v", err)
	}
	f.FailNext(razorpaytest.RouteCreateOrder, http.StatusBadRequest, "BAD_REQUEST_ERROR", "The amount must be atleast INR 1.00")
	if _, err := c.CreateOrder(ctx, req); !errors.Is(err, razorpay.ErrRejected) || errors.Is(err, razorpay.ErrUnavailable) {
		t.Fatalf("400: %v", err)
	}
	// Wrong credentials: 401, rejected, and the secret is not in the error.
	bad, _ := razorpay.NewClient(f.KeyID, "wrong-secret", &razorpay.ClientOptions{BaseURL: f.URL()})
	if _, err := bad.CreateOrder(ctx, req); !errors.As(err, &ae) || ae.Status != 401 || !errors.Is(err, razorpay.ErrRejected) {
		t.Fatalf("401: %v", err)
	}
	// A stalled API times out as unavailable.
	f.Stall(razorpaytest.RouteCreateOrder, 2*time.Second)
	start := time.Now()
	if _, err := c.CreateOrder(ctx, req); !errors.Is(err, razorpay.ErrUnavailable) {
		t.Fatalf("timeout: %v", err)
	}
	if time.Since(start) > 1500*time.Millisecond {
		t.Fatalf("the timeout took %v", time.Since(start))
	}
	f.Stall(razorpaytest.RouteCreateOrder, 0)
	// A context that ends is unavailable and carries its error.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.CreateOrder(cctx, req); !errors.Is(err, context.Canceled) || !errors.Is(err, razorpay.ErrUnavailable) {
		t.Fatalf("canceled: %v", err)
	}
	// An invalid order never reaches the API.
	n := f.Calls(razorpaytest.RouteCreateOrder)
	if _, err := c.CreateOrder(ctx, razorpay.OrderRequest{Amount: 99}); !errors.Is(err, razorpay.ErrAmountTooSmall) || f.Calls(razorpaytest.RouteCreateOrder) != n {
		t.Fatalf("small order: %v", err)
	}
	if _, err := c.FetchPayment(ctx, "pay_../../x"); !errors.Is(err, razorpay.ErrRejected) {
		t.Fatalf("bad id: %v", err)
	}
}

func FuzzParseAPIError(f *testing.F) {
	f.Add(500, []byte(`{"error":{"code":"SERVER_ERROR","description":"x"}}`))
	f.Add(400, []byte(`<html>bad gateway</html>`))
	f.Add(400, []byte(`{"error":null}`))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		e := razorpay.ParseAPIError(status, body)
		if e == nil || e.Status != status || len(e.Description) > 500 || len(e.Code) > 64 {
			t.Fatalf("%+v", e)
		}
		if (status >= 500 || status == 429) != errors.Is(e, razorpay.ErrUnavailable) {
			t.Fatalf("status %d classified as %v", status, e.Unwrap())
		}
	})
}
