package httpapi_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/httpapi"
	"github.com/keyledger/keyledger/store/memstore"
	"github.com/keyledger/keyledger/usage"
)

// The middleware in front of a model endpoint: it authenticates the
// Bearer key, applies the plan's limits, reserves the call's worst case
// and charges what the handler reports; a request without a valid key is
// refused before the handler runs.
func ExampleMiddleware() {
	ctx := context.Background()
	prices, _ := usage.NewPriceBook([]usage.ModelPrice{{
		Model: "forii/deepseek-v3", PromptPerMillion: decimal.NewFromInt(25), CompletionPerMillion: decimal.NewFromInt(100),
	}}, nil)
	kl, err := keyledger.New(memstore.New(), &keyledger.Options{Prices: prices})
	if err != nil {
		panic(err)
	}
	defer kl.Close(ctx)
	a, _ := kl.Signup(ctx, account.CreateParams{Name: "Asha", Email: "asha@example.com"}) // free plan: ₹50
	raw, _, _ := kl.Keys.Create(ctx, apikey.CreateParams{AccountID: a.ID, Name: "prod"})

	chat := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// … call the model, then report what it used.
		httpapi.FromContext(r.Context()).Report(keyledger.Outcome{PromptTokens: 2000, CompletionTokens: 400})
		io.WriteString(w, `{"choices":[]}`)
	})
	h := httpapi.Middleware(kl, &httpapi.Options{Request: func(*http.Request) (keyledger.Request, error) {
		return keyledger.Request{Model: "forii/deepseek-v3", PromptTokens: 2000, MaxCompletionTokens: 1000}, nil
	}})(chat)

	for _, key := range []string{raw.Reveal(), "forii_not-a-key"} {
		r := httptest.NewRequest("POST", "/v1/chat/completions", nil)
		r.Header.Set("Authorization", "Bearer "+key)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		fmt.Printf("%d limit=%q\n", w.Code, w.Header().Get("X-Ratelimit-Limit-Requests"))
	}
	bal, _ := kl.Credits.Balance(ctx, a.ID)
	fmt.Println("balance", credits.INR().Format(bal))
	// Output:
	// 200 limit="60"
	// 401 limit=""
	// balance 49.91
}
