package storetest

import (
	"errors"
	"fmt"
	"testing"

	"github.com/keyledger/keyledger/apikey"
)

func runKeyScopes(t *testing.T, newStore NewStoreFunc) {
	t.Run("ChildKeysNarrowAndCascade", func(t *testing.T) { testChildKeys(t, newStore) })
	t.Run("TestKeysCannotManageLiveKeys", func(t *testing.T) { testTestKeyCannotManageLive(t, newStore) })
}

func verify(t testing.TB, e *keyEnv, raw apikey.RawKey) apikey.Verified {
	t.Helper()
	v, err := e.keys.Verify(ctx(), raw)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return v
}

func testChildKeys(t *testing.T, newStore NewStoreFunc) {
	e := newKeyEnv(t, newStore, nil)
	a := e.account(t, "scopes@example.com")
	other := e.account(t, "other@example.com")
	rootRaw, root := e.create(t, apikey.CreateParams{AccountID: a.ID, Name: "root", Type: "api"}) // no scopes: everything
	// A key without the manage scope cannot create keys.
	plainRaw, _ := e.create(t, apikey.CreateParams{AccountID: a.ID, Name: "plain", Type: "sdk", Scopes: []string{"inference"}})
	plain := verify(t, e, plainRaw)
	if _, _, err := e.keys.CreateChild(ctx(), &plain, apikey.CreateParams{Name: "x", Type: "sdk"}); !errors.Is(err, apikey.ErrScopeNotAllowed) {
		t.Fatalf("child of a key without manage: %v", err)
	}
	rv := verify(t, e, rootRaw)
	midRaw, mid, err := e.keys.CreateChild(ctx(), &rv, apikey.CreateParams{AccountID: other.ID, Name: "mid", Type: "api",
		Scopes: []string{"manage", "inference"}, Models: []string{"m1", "m2"}})
	if err != nil {
		t.Fatal(err)
	}
	if mid.AccountID != a.ID || mid.Metadata[apikey.ParentMetadataKey] != root.ID {
		t.Fatalf("child %+v: must belong to the parent's account and name its parent", mid)
	}
	// A grandchild gets at most the child's scopes and models.
	mv := verify(t, e, midRaw)
	for _, p := range []apikey.CreateParams{
		{Name: "wider", Type: "sdk", Scopes: []string{"read"}},
		{Name: "other model", Type: "sdk", Models: []string{"m3"}},
	} {
		if _, _, err := e.keys.CreateChild(ctx(), &mv, p); !errors.Is(err, apikey.ErrScopeNotAllowed) && !errors.Is(err, apikey.ErrModelNotAllowed) {
			t.Fatalf("CreateChild(%s): %v, want a scope or model refusal", p.Name, err)
		}
	}
	leafRaw, leaf, err := e.keys.CreateChild(ctx(), &mv, apikey.CreateParams{Name: "leaf", Type: "sdk"})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(leaf.Scopes) != "[manage inference]" || fmt.Sprint(leaf.Models) != "[m1 m2]" {
		t.Fatalf("leaf inherits %v %v, want the parent's", leaf.Scopes, leaf.Models)
	}
	// Hosts cannot forge or drop the parent link.
	if _, _, err := e.keys.Create(ctx(), apikey.CreateParams{AccountID: a.ID, Name: "forged", Metadata: map[string]string{apikey.ParentMetadataKey: "x"}}); !errors.Is(err, apikey.ErrInvalidMetadata) {
		t.Fatalf("reserved metadata on create: %v", err)
	}
	up, err := e.keys.Update(ctx(), a.ID, leaf.ID, apikey.UpdateParams{Metadata: map[string]string{"team": "ops"}})
	if err != nil || up.Metadata[apikey.ParentMetadataKey] != mid.ID || up.Metadata["team"] != "ops" {
		t.Fatalf("update dropped the parent link: %+v %v", up.Metadata, err)
	}
	// Revoking the root revokes its whole tree.
	if _, err := e.keys.Revoke(ctx(), a.ID, root.ID); err != nil {
		t.Fatal(err)
	}
	for _, raw := range []apikey.RawKey{rootRaw, midRaw, leafRaw} {
		if _, err := e.keys.Verify(ctx(), raw); !errors.Is(err, apikey.ErrRevoked) {
			t.Fatalf("descendant after the root's revocation: %v, want ErrRevoked", err)
		}
	}
	if _, err := e.keys.Verify(ctx(), plainRaw); err != nil {
		t.Fatalf("an unrelated key: %v", err)
	}
	// A leaked key's children are revoked with it.
	r2, _ := e.create(t, apikey.CreateParams{AccountID: a.ID, Name: "root2", Type: "api"})
	v2 := verify(t, e, r2)
	c2, _, err := e.keys.CreateChild(ctx(), &v2, apikey.CreateParams{Name: "child2", Type: "sdk"})
	if err != nil {
		t.Fatal(err)
	}
	if _, known, err := e.keys.DisableLeaked(ctx(), r2); err != nil || !known {
		t.Fatalf("DisableLeaked: %v %v", known, err)
	}
	if _, err := e.keys.Verify(ctx(), c2); !errors.Is(err, apikey.ErrRevoked) {
		t.Fatalf("child of a leaked key: %v, want ErrRevoked", err)
	}
}

func testTestKeyCannotManageLive(t *testing.T, newStore NewStoreFunc) {
	e := newKeyEnv(t, newStore, nil)
	a := e.account(t, "env@example.com")
	testRaw, _ := e.create(t, apikey.CreateParams{AccountID: a.ID, Name: "test", Type: "test"})
	tv := verify(t, e, testRaw)
	if _, _, err := e.keys.CreateChild(ctx(), &tv, apikey.CreateParams{Name: "live", Type: "sdk"}); !errors.Is(err, apikey.ErrEnvironmentNotAllowed) {
		t.Fatalf("test key creating a live key: %v", err)
	}
	if err := tv.CanManage(apikey.EnvLive); !errors.Is(err, apikey.ErrEnvironmentNotAllowed) {
		t.Fatalf("CanManage(live) of a test key: %v", err)
	}
	if err := tv.CanManage(apikey.EnvTest); err != nil {
		t.Fatalf("CanManage(test) of a test key: %v", err)
	}
	if _, k, err := e.keys.CreateChild(ctx(), &tv, apikey.CreateParams{Name: "test child", Type: "test"}); err != nil || k.Environment != apikey.EnvTest {
		t.Fatalf("test key creating a test key: %+v %v", k, err)
	}
}
