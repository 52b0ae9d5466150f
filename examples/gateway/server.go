package main

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/examples/gateway/internal/invoice"
	"github.com/keyledger/keyledger/examples/gateway/internal/razorpay"
	"github.com/keyledger/keyledger/examples/gateway/internal/simmodel"
	"github.com/keyledger/keyledger/examples/internal/ghscan"
	"github.com/keyledger/keyledger/httpapi"
)

// maxBodyBytes bounds every request body; larger ones get 413.
const maxBodyBytes = 1 << 20

// server holds the gateway's dependencies. Handlers are thin: they decode,
// call the library or a helper, and encode.
type server struct {
	tel *telemetry // /metrics, /healthz, /readyz and traces (telemetry.go)

	kl   *keyledger.KeyLedger
	log  *slog.Logger
	cat  *catalog
	sim  *simmodel.Model
	up   *upstream // nil: the simulated model answers
	bill *billing
	now  func() time.Time

	limits requestLimits // per-request deadline and hold TTL

	rzpSim                                *razorpay.Simulator // demo mode: plays Razorpay; nil with a real key id
	live                                  paymentsAPI         // Razorpay's REST API; nil in demo mode
	rzpKeyID, rzpSecret, rzpWebhookSecret string
	// rzpCheckout is Razorpay's hosted checkout (live mode), publicURL the
	// gateway's address for its callback ("" sells no credits in the
	// dashboard in live mode).
	rzpCheckout, publicURL string
	supplier               invoice.Supplier

	dash http.Handler // the customer dashboard, at dashboardPath

	throttle   *keyledger.AuthThrottle // failed logins and sign-ups (lifecycle.go)
	proxies    httpapi.TrustedProxies  // whose X-Forwarded-For to believe
	verify     bool                    // sign-ups confirm their email (-smtp)
	adminToken string                  // operator routes; "" disables them
	github     *ghscan.Verifier        // nil: leaked-key reports are unsigned, throttled per address
}

// route is one registered route. The table is the single source of the
// router and of the OpenAPI test.
type route struct {
	method, pattern string
	h               http.Handler
}

// routes lists every route of the gateway.
func (s *server) routes() []route {
	inference := httpapi.Middleware(s.kl, &httpapi.Options{Request: s.inferenceRequest, Logger: s.log})
	return []route{
		{"GET", "/openapi.json", http.HandlerFunc(serveOpenAPI)},

		{"POST", "/v1/accounts", s.api(s.signup)},
		{"POST", "/v1/sessions", s.api(s.login)},
		{"DELETE", "/v1/sessions", s.api(s.logout)},
		{"GET", "/v1/accounts/{id}", s.owner(s.getAccount)},
		{"GET", "/v1/accounts/{id}/balance", s.owner(s.getBalance)},

		{"POST", "/v1/accounts/{id}/apiKeys", s.owner(s.createKey)},
		{"GET", "/v1/accounts/{id}/apiKeys", s.owner(s.listKeys)},
		{"GET", "/v1/accounts/{id}/apiKeys/{key_id}", s.owner(s.getKey)},
		{"PATCH", "/v1/accounts/{id}/apiKeys/{key_id}", s.owner(s.updateKey)},
		{"DELETE", "/v1/accounts/{id}/apiKeys/{key_id}", s.owner(s.revokeKey)},
		{"POST", "/v1/accounts/{id}/apiKeys/{key_id}/rotate", s.owner(s.rotateKey)},

		{"GET", "/v1/accounts/{id}/usage", s.owner(s.getUsage)},

		{"POST", "/v1/accounts/{id}/credits", s.owner(s.createOrder)},
		{"POST", "/v1/accounts/{id}/credits/verify", s.owner(s.verifyPayment)},
		{"POST", "/v1/webhooks/razorpay", s.api(s.razorpayWebhook)},
		{"GET", "/v1/accounts/{id}/payments", s.owner(s.listPayments)},
		{"GET", "/v1/accounts/{id}/billing_details", s.owner(s.getBillingDetails)},
		{"PUT", "/v1/accounts/{id}/billing_details", s.owner(s.putBillingDetails)},
		{"GET", "/v1/accounts/{id}/auto_recharge", s.owner(s.getAutoRecharge)},
		{"PUT", "/v1/accounts/{id}/auto_recharge", s.owner(s.putAutoRecharge)},
		{"GET", "/v1/accounts/{id}/transactions", s.owner(s.listTransactions)},
		{"GET", "/v1/accounts/{id}/invoices", s.owner(s.listInvoices)},
		{"GET", "/v1/accounts/{id}/invoices/{invoice_id}", s.owner(s.getInvoice)},
		{"POST", "/v1/leaked-keys", s.api(s.leakedKeys)},

		{"GET", "/v1/accounts/{id}/webhooks", s.owner(s.listWebhooks)},
		{"POST", "/v1/accounts/{id}/webhooks", s.owner(s.createWebhook)},
		{"DELETE", "/v1/accounts/{id}/webhooks/{webhook_id}", s.owner(s.deleteWebhook)},
		{"GET", "/v1/accounts/{id}/webhooks/deliveries", s.owner(s.listDeliveries)},
		{"GET", "/v1/accounts/{id}/alert_thresholds", s.owner(s.getThresholds)},
		{"PUT", "/v1/accounts/{id}/alert_thresholds", s.owner(s.putThresholds)},

		{"GET", "/v1/verify-email", s.api(s.verifyEmail)},
		{"POST", "/v1/verify-email", s.api(s.verifyEmail)},
		{"POST", "/v1/password/forgot", s.api(s.forgotPassword)},
		{"POST", "/v1/password/reset", s.api(s.resetPassword)},
		{"POST", "/v1/accounts/{id}/password", s.owner(s.changePassword)},
		{"DELETE", "/v1/accounts/{id}", s.owner(s.closeAccount)},
		{"PATCH", "/v1/admin/accounts/{id}", s.admin(s.adminUpdateAccount)},
		{"GET", "/v1/accounts/{id}/audit", s.owner(s.listAudit)},

		{"GET", "/inference/v1/models", s.inferenceAuth(http.HandlerFunc(s.listModels))},
		{"POST", "/inference/v1/chat/completions", s.readInferenceBody(inference(http.HandlerFunc(s.chatCompletions)))},
	}
}

// handler is the gateway's root handler: the routes on a method-aware
// ServeMux, behind a body-size limit.
func (s *server) handler() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range s.routes() {
		mux.Handle(rt.method+" "+rt.pattern, rt.h)
	}
	if s.dash != nil {
		mux.Handle(dashboardPath+"/", s.dash)
		if s.live != nil {
			// Razorpay's hosted checkout posts the payment back here: a
			// cross-site POST that carries no session cookie or CSRF token.
			mux.HandleFunc("POST "+checkoutCallbackPath, s.checkoutCallback)
		}
	}
	// Anything no route serves (an unknown path, a method the path does
	// not serve, an id holding an escaped "/") is a JSON 404 like every
	// other error, not the mux's text/plain one.
	mux.Handle("/", s.api(func(http.ResponseWriter, *http.Request) error { return errNotFound }))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > maxBodyBytes {
			s.writeError(w, r, errTooLarge)
			return
		}
		if r.Body != nil {
			r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
		}
		mux.ServeHTTP(w, r)
	})
}
