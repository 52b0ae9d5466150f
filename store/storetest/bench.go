package storetest

import (
	"testing"

	"github.com/keyledger/keyledger/account"
)

func benchVerifySession(b *testing.B, newStore NewStoreFunc, cached bool) {
	opts := &account.Options{}
	if !cached {
		opts.SessionCacheTTL = -1
	}
	e := newEnv(b, newStore, opts)
	mustCreate(b, e.acc, account.CreateParams{Name: "B", Email: "b@example.com", Password: "password1"})
	tok, _ := login(b, e.acc, "b@example.com", "password1")
	if _, err := e.acc.VerifySession(ctx(), tok); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.acc.VerifySession(ctx(), tok); err != nil {
			b.Fatal(err)
		}
	}
}

func benchGetAccount(b *testing.B, newStore NewStoreFunc) {
	e := newEnv(b, newStore, nil)
	a := mustCreate(b, e.acc, account.CreateParams{Name: "G", Email: "g@example.com", Metadata: map[string]string{"k": "v"}})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.acc.Get(ctx(), a.ID); err != nil {
			b.Fatal(err)
		}
	}
}
