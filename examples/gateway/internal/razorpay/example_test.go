package razorpay_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/keyledger/keyledger/examples/gateway/internal/razorpay"
	"github.com/shopspring/decimal"
)

// Example walks the purchase flow: the server creates an order in paise,
// Checkout returns a signed response, the server verifies it against the
// stored order, and a signed payment.captured webhook confirms the same
// payment.
func Example() {
	ctx := context.Background()
	const keySecret, webhookSecret = "rzp_test_secret", "whsec_test"
	sim, err := razorpay.NewSimulator(keySecret, nil)
	if err != nil {
		panic(err)
	}

	amount, err := razorpay.CheckAmount(decimal.RequireFromString("590.00"), 0)
	if err != nil {
		panic(err)
	}
	order, err := sim.CreateOrder(ctx, razorpay.OrderRequest{Amount: amount, Receipt: "acct_1/1"})
	if err != nil {
		panic(err)
	}
	fmt.Println(order.Amount, "paise =", "₹"+order.Amount.Rupees(), order.Status, razorpay.ValidOrderID(order.ID))

	checkout, payment, _ := sim.Pay(ctx, order) // the browser posts checkout to the server
	err = razorpay.VerifyPaymentSignature(order.ID, checkout.PaymentID, checkout.Signature, keySecret)
	fmt.Println("checkout verified:", err == nil)
	err = razorpay.VerifyPaymentSignature(order.ID, checkout.PaymentID, checkout.Signature, "wrong secret")
	fmt.Println("forged:", errors.Is(err, razorpay.ErrInvalidSignature))

	body, _ := json.Marshal(razorpay.NewPaymentCapturedEvent(payment, order.CreatedAtTime()))
	header := razorpay.SignWebhook(body, webhookSecret) // X-Razorpay-Signature
	if err := razorpay.VerifyWebhookSignature(body, header, webhookSecret); err != nil {
		panic(err)
	}
	event, err := razorpay.ParseWebhook(body)
	if err != nil {
		panic(err)
	}
	p, _ := event.CapturedPayment()
	fmt.Println(event.Event, p.ID == checkout.PaymentID, p.Matches(order))
	// Output:
	// 59000 paise = ₹590.00 created true
	// checkout verified: true
	// forged: true
	// payment.captured true <nil>
}
