package apikey_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/memstore"
)

// exampleAccount returns a store with one account.
func exampleAccount(ctx context.Context) (*memstore.Store, account.Account) {
	st := memstore.New()
	accounts, err := account.NewService(store.Driver(st), nil)
	if err != nil {
		panic(err)
	}
	a, err := accounts.Create(ctx, account.CreateParams{Name: "Asha Rao", Email: "asha@example.com"})
	if err != nil {
		panic(err)
	}
	return st, a
}

// Create a key, show it once, verify it, revoke it.
func Example() {
	ctx := context.Background()
	st, acct := exampleAccount(ctx)
	keys, err := apikey.NewService(store.Driver(st), nil)
	if err != nil {
		panic(err)
	}
	defer keys.Close(ctx)

	raw, key, err := keys.Create(ctx, apikey.CreateParams{AccountID: acct.ID, Name: "prod-api"})
	if err != nil {
		panic(err)
	}
	fmt.Println(key.Name, key.Type, key.Status, strings.HasPrefix(raw.Reveal(), key.Hint))
	fmt.Println("logged as:", raw)

	v, err := keys.Verify(ctx, raw)
	fmt.Println(v.AccountID == acct.ID, v.KeyID == key.ID, v.Plan, v.Environment, err)

	if _, err := keys.Revoke(ctx, acct.ID, key.ID); err != nil {
		panic(err)
	}
	_, err = keys.Verify(ctx, raw)
	fmt.Println(err)
	// Output:
	// prod-api live active true
	// logged as: [REDACTED]
	// true true free live <nil>
	// apikey: key revoked
}

// The key formats of the seed systems.
func ExampleNewFormat() {
	forii, err := apikey.NewFormat(apikey.FormatConfig{HintChars: 6, Types: []apikey.KeyType{
		{Name: "sdk", Prefix: "forii_sk_"},
		{Name: "api", Prefix: "forii_"},
	}})
	if err != nil {
		panic(err)
	}
	emailVerify, err := apikey.NewFormat(apikey.FormatConfig{Types: []apikey.KeyType{
		{Name: "live", Prefix: "kw_live_", Environment: apikey.EnvLive},
		{Name: "test", Prefix: "kw_test_", Environment: apikey.EnvTest},
	}})
	if err != nil {
		panic(err)
	}
	for _, c := range []struct {
		f   *apikey.Format
		typ string
	}{{forii, "sdk"}, {forii, "api"}, {emailVerify, "test"}} {
		raw, _ := c.f.Generate(c.typ)
		p, err := c.f.Parse(raw)
		fmt.Println(p.Type.Name, p.Type.Prefix, p.Type.Environment, len(raw.Reveal()), len(p.Hint), err)
	}
	_, err = forii.Parse("forii_sk_xxxxxxxxxxxxxxxxxxxxxxxx")
	fmt.Println(err)
	// Output:
	// sdk forii_sk_ live 43 15 <nil>
	// api forii_ live 40 12 <nil>
	// test kw_test_ test 42 12 <nil>
	// apikey: malformed key
}

// Rotation keeps the key ID; the old secret works for the grace period only.
func ExampleService_Rotate() {
	ctx := context.Background()
	st, acct := exampleAccount(ctx)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	keys, err := apikey.NewService(store.Driver(st), &apikey.Options{Now: func() time.Time { return now }})
	if err != nil {
		panic(err)
	}
	defer keys.Close(ctx)
	old, key, _ := keys.Create(ctx, apikey.CreateParams{AccountID: acct.ID, Name: "ci"})

	fresh, rotated, err := keys.Rotate(ctx, acct.ID, key.ID, time.Hour)
	fmt.Println(rotated.ID == key.ID, rotated.GraceUntil.Format(time.Kitchen), err)
	_, errOld := keys.Verify(ctx, old)
	_, errNew := keys.Verify(ctx, fresh)
	fmt.Println("inside grace:", errOld, errNew)

	now = now.Add(time.Hour)
	_, errOld = keys.Verify(ctx, old)
	_, errNew = keys.Verify(ctx, fresh)
	fmt.Println("after grace:", errOld, errNew)
	// Output:
	// true 1:00PM <nil>
	// inside grace: <nil> <nil>
	// after grace: apikey: key expired <nil>
}

// A request context bound to its key ends when the key is revoked.
func ExampleService_Bind() {
	ctx := context.Background()
	st, acct := exampleAccount(ctx)
	keys, err := apikey.NewService(store.Driver(st), nil)
	if err != nil {
		panic(err)
	}
	defer keys.Close(ctx)
	raw, key, _ := keys.Create(ctx, apikey.CreateParams{AccountID: acct.ID, Name: "stream"})

	v, _ := keys.Verify(ctx, raw)
	reqCtx, release := keys.Bind(ctx, v)
	defer release() // when the request ends

	if _, err := keys.Revoke(ctx, acct.ID, key.ID); err != nil {
		panic(err)
	}
	<-reqCtx.Done()
	fmt.Println(context.Cause(reqCtx))
	// Output:
	// apikey: key revoked
}

// Keys restricted to models and scopes (FPT's per-key model permissions,
// Forii's coming scoped keys).
func ExampleVerified_Permit() {
	ctx := context.Background()
	st, acct := exampleAccount(ctx)
	keys, err := apikey.NewService(store.Driver(st), nil)
	if err != nil {
		panic(err)
	}
	defer keys.Close(ctx)
	raw, _, _ := keys.Create(ctx, apikey.CreateParams{
		AccountID: acct.ID, Name: "chat only", Models: []string{"forii/deepseek-v3"}, Scopes: []string{"inference"},
	})
	v, _ := keys.Verify(ctx, raw)
	fmt.Println(v.Permit("forii/deepseek-v3", "inference"))
	fmt.Println(v.Permit("forii/llama-3", "inference"))
	fmt.Println(v.Permit("", "manage"))
	// Output:
	// <nil>
	// apikey: model not allowed for this key
	// apikey: scope not allowed for this key
}

// A raw key never reaches logs or JSON by accident.
func ExampleRawKey() {
	raw := apikey.RawKey("kl_live_0123456789abcdefghijklmnopqr012345")
	fmt.Printf("%v %s %q %#v\n", raw, raw, raw, raw)
	b, _ := json.Marshal(map[string]any{"key": raw})
	fmt.Println(string(b))
	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
	logger.Info("verify failed", "key", raw)
	fmt.Println(raw.GoString(), len(raw.Reveal()))
	// Output:
	// [REDACTED] [REDACTED] [REDACTED] [REDACTED]
	// {"key":"[REDACTED]"}
	// level=INFO msg="verify failed" key=[REDACTED]
	// apikey.RawKey("[REDACTED]") 42
}
