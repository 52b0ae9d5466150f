package storetest

import (
	"fmt"
	"testing"

	"github.com/keyledger/keyledger/apikey"
)

func benchAPIKeys(b *testing.B, newStore NewStoreFunc) {
	b.Run("VerifyUncached", func(b *testing.B) { benchKeyVerifyUncached(b, newStore) })
	b.Run("Create", func(b *testing.B) { benchKeyCreate(b, newStore) })
	b.Run("FlushLastUsed100", func(b *testing.B) { benchKeyFlush(b, newStore) })
}

// benchKeyVerifyUncached is the backend's share of a verify cache miss: the
// hash lookup joined with the account.
func benchKeyVerifyUncached(b *testing.B, newStore NewStoreFunc) {
	e := newKeyEnv(b, newStore, &apikey.Options{RefreshInterval: -1, LastUsedInterval: -1})
	a := e.account(b, "bench@example.com")
	raw, _ := e.create(b, apikey.CreateParams{AccountID: a.ID, Name: "bench", Models: []string{"m1", "m2"}})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.keys.Verify(ctx(), raw); err != nil {
			b.Fatal(err)
		}
	}
}

func benchKeyCreate(b *testing.B, newStore NewStoreFunc) {
	e := newKeyEnv(b, newStore, nil)
	a := e.account(b, "bench@example.com")
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := e.keys.Create(ctx(), apikey.CreateParams{AccountID: a.ID, Name: "bench"}); err != nil {
			b.Fatal(err)
		}
	}
}

// benchKeyFlush writes last_used_at of 100 keys in one call.
func benchKeyFlush(b *testing.B, newStore NewStoreFunc) {
	e := newKeyEnv(b, newStore, nil)
	a := e.account(b, "bench@example.com")
	uses := make([]apikey.Use, 100)
	for i := range uses {
		_, k := e.create(b, apikey.CreateParams{AccountID: a.ID, Name: fmt.Sprint("k", i)})
		uses[i].KeyID = k.ID
	}
	b.ReportAllocs()
	for b.Loop() {
		e.clk.Advance(1)
		for i := range uses {
			uses[i].At = e.clk.Now()
		}
		if err := e.st.TouchAPIKeys(ctx(), uses); err != nil {
			b.Fatal(err)
		}
	}
}
