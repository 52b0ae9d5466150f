package main

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/keyledger/keyledger/apikey"
)

// keyJSON is a key as the API shows it: masked (prefix is the key type's
// prefix plus the first body characters), never the raw key.
type keyJSON struct {
	ID       string   `json:"id"`
	Name     string   `json:"name"`
	Key      string   `json:"key,omitempty"` // only from create and rotate
	Prefix   string   `json:"prefix"`
	Type     string   `json:"type"`
	Models   []string `json:"models"`
	Status   string   `json:"status"`
	Created  string   `json:"created"`
	LastUsed *string  `json:"last_used"`
	Expires  *string  `json:"expires"`
	// GraceUntil is when the previous secret of a rotated key stops
	// working.
	GraceUntil *string `json:"grace_until,omitempty"`
	// SpendLimit is the key's spend limit and its use this period; null
	// when it has none.
	SpendLimit *spendLimitJSON `json:"spend_limit"`
}

func keyView(k apikey.APIKey, now time.Time) keyJSON {
	models := k.Models
	if models == nil {
		models = []string{}
	}
	status := string(k.Status)
	if k.Status == apikey.StatusActive && !k.ExpiresAt.IsZero() && !now.Before(k.ExpiresAt) {
		status = string(apikey.StatusExpired)
	}
	v := keyJSON{ID: k.ID, Name: k.Name, Prefix: k.Hint, Type: k.Type, Models: models, Status: status,
		Created: rfc3339(k.CreatedAt), LastUsed: optTime(k.LastUsedAt), Expires: optTime(k.ExpiresAt)}
	// After revocation (or disabling, or expiry) neither secret works:
	// only an active key reports its old secret's grace period.
	if status == string(apikey.StatusActive) && k.GraceUntil.After(now) {
		v.GraceUntil = optTime(k.GraceUntil)
	}
	return v
}

// POST /v1/accounts/{id}/apiKeys {name, type?, models?, expires?, spend_limit?}
func (s *server) createKey(w http.ResponseWriter, r *http.Request, acct string) error {
	var in struct {
		Name       string          `json:"name"`
		Type       string          `json:"type"`
		Models     []string        `json:"models"`
		Expires    *time.Time      `json:"expires"`
		SpendLimit json.RawMessage `json:"spend_limit"`
	}
	if err := decodeJSON(r, &in, false); err != nil {
		return err
	}
	_, limit, err := parseSpendLimit(in.SpendLimit)
	if err != nil {
		return err
	}
	if in.Type == "" {
		in.Type = "sdk"
	}
	if err := s.checkModels(in.Models); err != nil {
		return err
	}
	p := apikey.CreateParams{AccountID: acct, Name: in.Name, Type: in.Type, Models: in.Models}
	if in.Expires != nil {
		p.ExpiresAt = *in.Expires
	}
	var raw apikey.RawKey
	var k apikey.APIKey
	if parent, ok := callerKey(r.Context()); ok {
		// Made by an API key: within its scopes and models, revoked with it.
		raw, k, err = s.kl.Keys.CreateChild(r.Context(), parent, p)
	} else {
		raw, k, err = s.kl.Keys.Create(r.Context(), p)
	}
	if err != nil {
		return err
	}
	v := keyView(k, s.now())
	if limit != nil {
		ks, err := s.kl.SetKeySpendLimit(r.Context(), acct, k.ID, limit)
		if err != nil {
			return err
		}
		v.SpendLimit = spendLimitView(ks)
	}
	v.Key = raw.Reveal()
	writeJSON(w, http.StatusCreated, v)
	return nil
}

// checkModels refuses model restrictions naming models the gateway does not
// serve.
func (s *server) checkModels(models []string) error {
	for _, m := range models {
		if _, ok := s.cat.byID[m]; !ok {
			return badRequest("Unknown model in models: " + strconv.Quote(m) + ".")
		}
	}
	return nil
}

// GET /v1/accounts/{id}/apiKeys?limit&cursor
func (s *server) listKeys(w http.ResponseWriter, r *http.Request, acct string) error {
	limit, err := parseLimit(r.URL.Query().Get("limit"))
	if err != nil {
		return err
	}
	page, err := s.kl.Keys.List(r.Context(), acct, apikey.ListParams{Cursor: r.URL.Query().Get("cursor"), Limit: limit})
	if err != nil {
		return err
	}
	spends, err := s.kl.KeySpends(r.Context(), acct)
	if err != nil {
		return err
	}
	now := s.now()
	out := struct {
		Data       []keyJSON `json:"data"`
		NextCursor *string   `json:"next_cursor"`
	}{Data: make([]keyJSON, 0, len(page.Keys))}
	for _, k := range page.Keys {
		v := keyView(k, now)
		if ks, ok := spends[k.ID]; ok {
			v.SpendLimit = spendLimitView(ks)
		}
		out.Data = append(out.Data, v)
	}
	if page.NextCursor != "" {
		out.NextCursor = &page.NextCursor
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// parseLimit parses an optional page size (1-500).
func parseLimit(s string) (int, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 500 {
		return 0, badRequest("limit must be an integer from 1 to 500.")
	}
	return n, nil
}

// PATCH /v1/accounts/{id}/apiKeys/{key_id} {name?, models?, spend_limit?}:
// spend_limit null removes the key's limit.
func (s *server) updateKey(w http.ResponseWriter, r *http.Request, acct string) error {
	var in struct {
		Name       *string         `json:"name"`
		Models     *[]string       `json:"models"`
		SpendLimit json.RawMessage `json:"spend_limit"`
	}
	if err := decodeJSON(r, &in, false); err != nil {
		return err
	}
	setLimit, limit, err := parseSpendLimit(in.SpendLimit)
	if err != nil {
		return err
	}
	if in.Models != nil {
		if err := s.checkModels(*in.Models); err != nil {
			return err
		}
	}
	var k apikey.APIKey
	if in.Name != nil || in.Models != nil || !setLimit {
		k, err = s.kl.Keys.Update(r.Context(), acct, r.PathValue("key_id"), apikey.UpdateParams{Name: in.Name, Models: in.Models})
	} else {
		k, err = s.kl.Keys.Get(r.Context(), acct, r.PathValue("key_id"))
	}
	if err != nil {
		return err
	}
	if setLimit {
		if _, err := s.kl.SetKeySpendLimit(r.Context(), acct, k.ID, limit); err != nil {
			return err
		}
	}
	v, err := s.withSpend(r, acct, keyView(k, s.now()))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

// DELETE /v1/accounts/{id}/apiKeys/{key_id}: revokes at once; requests in
// flight with the key fail (their context is cancelled).
func (s *server) revokeKey(w http.ResponseWriter, r *http.Request, acct string) error {
	k, err := s.kl.Keys.Revoke(r.Context(), acct, r.PathValue("key_id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"id": k.ID, "status": string(apikey.StatusRevoked)})
	return nil
}

// maxGraceSeconds bounds a rotation's grace period (30 days).
const maxGraceSeconds = 30 * 24 * 3600

// POST /v1/accounts/{id}/apiKeys/{key_id}/rotate {grace_seconds?}
func (s *server) rotateKey(w http.ResponseWriter, r *http.Request, acct string) error {
	var in struct {
		GraceSeconds int64 `json:"grace_seconds"`
	}
	if err := decodeJSON(r, &in, true); err != nil {
		return err
	}
	if in.GraceSeconds < 0 || in.GraceSeconds > maxGraceSeconds {
		return badRequest("grace_seconds must be from 0 to 2592000 (30 days).")
	}
	raw, k, err := s.kl.Keys.Rotate(r.Context(), acct, r.PathValue("key_id"), time.Duration(in.GraceSeconds)*time.Second)
	if err != nil {
		return err
	}
	v, err := s.withSpend(r, acct, keyView(k, s.now()))
	if err != nil {
		return err
	}
	v.Key = raw.Reveal()
	writeJSON(w, http.StatusOK, v)
	return nil
}
