package razorpay

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// DefaultBaseURL is Razorpay's API.
const DefaultBaseURL = "https://api.razorpay.com"

// HostedCheckoutPath is Razorpay's hosted checkout under the API base: a
// page the browser POSTs the checkout options to as form fields (key_id,
// order_id, amount, callback_url, …), no JavaScript needed. Razorpay then
// POSTs razorpay_payment_id, razorpay_order_id and razorpay_signature (or
// error[…] fields) to callback_url.
const HostedCheckoutPath = "/v1/checkout/embedded"

// Errors of the REST client. Match them with errors.Is; an *APIError
// carries Razorpay's code and description.
var (
	// ErrRejected: Razorpay answered 4xx (BAD_REQUEST_ERROR and the like):
	// retrying the same request will not help.
	ErrRejected = errors.New("razorpay: request rejected")
	// ErrUnavailable: a 5xx, a timeout or a network failure; the outcome of
	// a write is unknown and the caller may retry idempotently.
	ErrUnavailable = errors.New("razorpay: API unavailable")
	// ErrMalformedResponse: a 2xx whose body is not the documented entity.
	ErrMalformedResponse = errors.New("razorpay: malformed response")
)

// maxResponseBytes bounds the body the client reads; entities are a few KiB.
const maxResponseBytes = 1 << 20

// APIError is Razorpay's error envelope:
//
//	{"error":{"code":"BAD_REQUEST_ERROR","description":"…","source":"…",
//	 "step":"…","reason":"…","field":"amount"}}
type APIError struct {
	Status      int    `json:"-"`
	Code        string `json:"code"`
	Description string `json:"description"`
	Source      string `json:"source,omitempty"`
	Step        string `json:"step,omitempty"`
	Reason      string `json:"reason,omitempty"`
	Field       string `json:"field,omitempty"`
}

func (e *APIError) Error() string {
	return fmt.Sprintf("razorpay: HTTP %d %s: %s", e.Status, e.Code, e.Description)
}

// Unwrap classifies the error: ErrUnavailable for 5xx (and 429), otherwise
// ErrRejected.
func (e *APIError) Unwrap() error {
	if e.Status >= 500 || e.Status == http.StatusTooManyRequests {
		return ErrUnavailable
	}
	return ErrRejected
}

// ParseAPIError decodes an error response of status. A body that is not
// the envelope still gives an *APIError, with Code "" and a truncated
// description, so a proxy's HTML page never becomes a success.
func ParseAPIError(status int, body []byte) *APIError {
	var env struct {
		Error *APIError `json:"error"`
	}
	if err := json.Unmarshal(body, &env); err != nil || env.Error == nil {
		return &APIError{Status: status, Description: truncate(string(body), 200)}
	}
	e := env.Error
	e.Status = status
	e.Code, e.Description = truncate(e.Code, 64), truncate(e.Description, 500)
	e.Source, e.Step, e.Reason, e.Field = truncate(e.Source, 64), truncate(e.Step, 64), truncate(e.Reason, 64), truncate(e.Field, 64)
	return e
}

// ClientOptions configures a Client; nil means defaults.
type ClientOptions struct {
	// BaseURL is the API base, default DefaultBaseURL (tests and staging
	// point it at a fake).
	BaseURL string
	// HTTPClient sends the requests; default a client with Timeout.
	HTTPClient *http.Client
	// Timeout bounds each request when HTTPClient is nil; default 15s.
	Timeout time.Duration
}

// Client is a small client of Razorpay's documented REST endpoints
// (Orders, Payments fetch/capture, Customers, recurring payments), with
// Basic auth key_id:key_secret. It is safe for concurrent use. The key
// secret never appears in its errors.
type Client struct {
	base          string
	keyID, secret string
	hc            *http.Client
}

var _ OrderCreator = (*Client)(nil)

// NewClient returns a Client of the account keyID/keySecret.
func NewClient(keyID, keySecret string, opts *ClientOptions) (*Client, error) {
	if keyID == "" || keySecret == "" {
		return nil, ErrEmptySecret
	}
	var o ClientOptions
	if opts != nil {
		o = *opts
	}
	if o.BaseURL == "" {
		o.BaseURL = DefaultBaseURL
	}
	u, err := url.Parse(o.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: BaseURL %q is not an http(s) URL", ErrInvalidOptions, o.BaseURL)
	}
	if o.Timeout <= 0 {
		o.Timeout = 15 * time.Second
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: o.Timeout}
	}
	return &Client{base: strings.TrimRight(o.BaseURL, "/"), keyID: keyID, secret: keySecret, hc: o.HTTPClient}, nil
}

// do sends one request and decodes a 2xx body into out.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("razorpay: %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return fmt.Errorf("razorpay: %s %s: %w", method, path, err)
	}
	req.SetBasicAuth(c.keyID, c.secret)
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return fmt.Errorf("razorpay: %s %s: %w (%w)", method, path, ErrUnavailable, ctxErr)
		}
		return fmt.Errorf("razorpay: %s %s: %w: %v", method, path, ErrUnavailable, redact(err))
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return fmt.Errorf("razorpay: %s %s: %w: reading the response: %v", method, path, ErrUnavailable, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return ParseAPIError(resp.StatusCode, raw)
	}
	if len(raw) > maxResponseBytes {
		return fmt.Errorf("%w: %s %s: body too large", ErrMalformedResponse, method, path)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("%w: %s %s: %v", ErrMalformedResponse, method, path, err)
	}
	return nil
}

// redact drops the URL of a transport error (it never holds the secret,
// which travels in a header, but keeps errors short).
func redact(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// CreateOrder creates an order (POST /v1/orders). A request Razorpay would
// reject fails before the call, as with the Simulator.
func (c *Client) CreateOrder(ctx context.Context, req OrderRequest) (Order, error) {
	if err := req.Validate(0); err != nil {
		return Order{}, err
	}
	if req.Currency == "" {
		req.Currency = Currency
	}
	var o Order
	if err := c.do(ctx, http.MethodPost, "/v1/orders", req, &o); err != nil {
		return Order{}, err
	}
	if o.Entity != "order" || !ValidOrderID(o.ID) || o.Amount != req.Amount || o.Currency != req.Currency {
		return Order{}, fmt.Errorf("%w: order %q of %d %s for a request of %d %s", ErrMalformedResponse, truncate(o.ID, 40), o.Amount, truncate(o.Currency, 8), req.Amount, req.Currency)
	}
	return o, nil
}

// FetchPayment returns a payment (GET /v1/payments/{id}).
func (c *Client) FetchPayment(ctx context.Context, paymentID string) (Payment, error) {
	if !ValidPaymentID(paymentID) {
		return Payment{}, fmt.Errorf("%w: payment id %q", ErrRejected, truncate(paymentID, 40))
	}
	var p Payment
	if err := c.do(ctx, http.MethodGet, "/v1/payments/"+paymentID, nil, &p); err != nil {
		return Payment{}, err
	}
	return p, checkPayment(p, paymentID)
}

// CapturePayment captures an authorized payment (POST
// /v1/payments/{id}/capture {amount, currency}).
func (c *Client) CapturePayment(ctx context.Context, paymentID string, amount Paise, currency string) (Payment, error) {
	if !ValidPaymentID(paymentID) {
		return Payment{}, fmt.Errorf("%w: payment id %q", ErrRejected, truncate(paymentID, 40))
	}
	var p Payment
	in := map[string]any{"amount": amount, "currency": currency}
	if err := c.do(ctx, http.MethodPost, "/v1/payments/"+paymentID+"/capture", in, &p); err != nil {
		return Payment{}, err
	}
	return p, checkPayment(p, paymentID)
}

func checkPayment(p Payment, id string) error {
	if p.Entity != "payment" || p.ID != id || p.Amount <= 0 || p.Currency == "" || p.Status == "" {
		return fmt.Errorf("%w: payment %q", ErrMalformedResponse, truncate(p.ID, 40))
	}
	return nil
}

// CustomerRequest creates a customer.
type CustomerRequest struct {
	Name    string `json:"name,omitempty"`
	Email   string `json:"email,omitempty"`
	Contact string `json:"contact,omitempty"`
	// FailExisting "0" returns the existing customer with the same details
	// instead of an error.
	FailExisting string            `json:"fail_existing,omitempty"`
	Notes        map[string]string `json:"notes,omitempty"`
}

// Customer is Razorpay's customer entity.
type Customer struct {
	ID     string `json:"id"`
	Entity string `json:"entity"` // "customer"
	Name   string `json:"name"`
	Email  string `json:"email"`
}

// CreateCustomer creates a customer (POST /v1/customers), or returns the
// existing one when req.FailExisting is "0".
func (c *Client) CreateCustomer(ctx context.Context, req CustomerRequest) (Customer, error) {
	var cu Customer
	if err := c.do(ctx, http.MethodPost, "/v1/customers", req, &cu); err != nil {
		return Customer{}, err
	}
	if cu.Entity != "customer" || !validID(cu.ID, "cust_") {
		return Customer{}, fmt.Errorf("%w: customer %q", ErrMalformedResponse, truncate(cu.ID, 40))
	}
	return cu, nil
}

// RecurringRequest charges a saved token for an order (POST
// /v1/payments/create/recurring).
type RecurringRequest struct {
	Email      string `json:"email"`
	Contact    string `json:"contact,omitempty"`
	Amount     Paise  `json:"amount"`
	Currency   string `json:"currency"`
	OrderID    string `json:"order_id"`
	CustomerID string `json:"customer_id"`
	Token      string `json:"token"`
	Recurring  string `json:"recurring"` // "1"
	// Description is shown to the customer.
	Description string `json:"description,omitempty"`
}

// CreateRecurringPayment charges a token. Razorpay answers with the
// payment id (and a signature over order|payment); the payment's outcome
// is read with FetchPayment or arrives by webhook.
func (c *Client) CreateRecurringPayment(ctx context.Context, req RecurringRequest) (CheckoutResponse, error) {
	if req.Currency == "" {
		req.Currency = Currency
	}
	req.Recurring = "1"
	var out CheckoutResponse
	if err := c.do(ctx, http.MethodPost, "/v1/payments/create/recurring", req, &out); err != nil {
		return CheckoutResponse{}, err
	}
	if !ValidPaymentID(out.PaymentID) || out.OrderID != req.OrderID {
		return CheckoutResponse{}, fmt.Errorf("%w: recurring payment %q for order %q", ErrMalformedResponse, truncate(out.PaymentID, 40), truncate(out.OrderID, 40))
	}
	if err := VerifyPaymentSignature(req.OrderID, out.PaymentID, out.Signature, c.secret); err != nil {
		return CheckoutResponse{}, fmt.Errorf("%w: recurring payment %s: %w", ErrMalformedResponse, out.PaymentID, err)
	}
	return out, nil
}
