package razorpay

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
)

// SignPayment returns the checkout signature Razorpay computes for a
// payment: hex(HMAC-SHA256(keySecret, orderID + "|" + paymentID)). Servers
// verify with VerifyPaymentSignature; tests and the Simulator sign with it.
func SignPayment(orderID, paymentID, keySecret string) string {
	return hex.EncodeToString(paymentMAC(orderID, paymentID, keySecret))
}

func paymentMAC(orderID, paymentID, keySecret string) []byte {
	m := hmac.New(sha256.New, []byte(keySecret))
	m.Write([]byte(orderID))
	m.Write([]byte{'|'})
	m.Write([]byte(paymentID))
	return m.Sum(nil)
}

// VerifyPaymentSignature checks a checkout response's razorpay_signature.
// orderID must be the id the server stored when it created the order (not
// the one echoed by the browser). It returns nil, ErrInvalidSignature, or
// ErrEmptySecret when keySecret is empty (which would make signatures
// forgeable). The comparison takes constant time.
func VerifyPaymentSignature(orderID, paymentID, signature, keySecret string) error {
	if keySecret == "" {
		return ErrEmptySecret
	}
	return compare(paymentMAC(orderID, paymentID, keySecret), signature)
}

// SignWebhook returns the X-Razorpay-Signature of a webhook body:
// hex(HMAC-SHA256(webhookSecret, rawBody)).
func SignWebhook(rawBody []byte, webhookSecret string) string {
	return hex.EncodeToString(webhookMAC(rawBody, webhookSecret))
}

func webhookMAC(rawBody []byte, webhookSecret string) []byte {
	m := hmac.New(sha256.New, []byte(webhookSecret))
	m.Write(rawBody)
	return m.Sum(nil)
}

// VerifyWebhookSignature checks the X-Razorpay-Signature header against the
// raw request body, exactly as received. It returns nil,
// ErrInvalidSignature, or ErrEmptySecret. The comparison takes constant
// time.
func VerifyWebhookSignature(rawBody []byte, headerSignature, webhookSecret string) error {
	if webhookSecret == "" {
		return ErrEmptySecret
	}
	return compare(webhookMAC(rawBody, webhookSecret), headerSignature)
}

// compare checks a hex signature against mac in constant time (the length
// of a signature is public).
func compare(mac []byte, signature string) error {
	if len(signature) != hex.EncodedLen(len(mac)) {
		return ErrInvalidSignature
	}
	got, err := hex.DecodeString(signature)
	if err != nil || !hmac.Equal(got, mac) {
		return ErrInvalidSignature
	}
	return nil
}
