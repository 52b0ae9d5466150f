package main

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/keyledger/keyledger/auditlog"
)

// The audit log (issue 21). The library records every management change
// made through the KeyLedger's services; the gateway only says who acts
// and from where (auditContext, set once for every API route by api, owner
// and admin), appends the actions the library cannot see (a payment order,
// billing details: appendAudit), serves an account's log and prunes it.

// auditPruneInterval is how often the gateway prunes audit entries past
// their retention (auditlog.DefaultRetention, 400 days).
const auditPruneInterval = time.Hour

// auditContext returns r's context carrying the client's address (the
// connection's, or X-Forwarded-For's behind a -trusted-proxies proxy) and
// user agent (truncated).
func (s *server) auditContext(r *http.Request) context.Context {
	return auditlog.WithClient(r.Context(), s.clientAddr(r), r.UserAgent())
}

// appendAudit records an action of the gateway's own (one the library
// does not perform) on an account: one line per action.
func (s *server) appendAudit(ctx context.Context, acct, action string, target auditlog.Target, changes ...auditlog.Change) {
	if _, err := s.kl.Audit.Append(context.WithoutCancel(ctx), auditlog.Entry{AccountID: acct, Action: action, Target: target, Changes: changes}); err != nil {
		s.log.ErrorContext(ctx, "audit entry not recorded", "action", action, "account", acct, "err", err)
	}
}

// pruneAuditLoop prunes the audit log every interval until ctx ends.
func (s *server) pruneAuditLoop(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if n, err := s.kl.Audit.Prune(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("audit prune", "err", err)
		} else if n > 0 {
			s.log.Info("audit entries pruned", "count", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// auditEntryJSON is an entry as the API shows it.
type auditEntryJSON struct {
	ID        string            `json:"id"`
	Time      string            `json:"time"`
	Actor     auditlog.Actor    `json:"actor"`
	Action    string            `json:"action"`
	Target    auditlog.Target   `json:"target"`
	Changes   []auditlog.Change `json:"changes"`
	ClientIP  string            `json:"client_ip,omitempty"`
	UserAgent string            `json:"user_agent,omitempty"`
}

// GET /v1/accounts/{id}/audit?cursor=&limit=&action=&actor=&since=&until=:
// the account's own audit entries, newest first. action matches exactly or
// by prefix ("key.*"); actor is "kind" or "kind:id"; since and until are
// RFC 3339 times.
func (s *server) listAudit(w http.ResponseWriter, r *http.Request, acct string) error {
	q := r.URL.Query()
	aq := auditlog.Query{AccountID: acct, Action: q.Get("action"), Cursor: q.Get("cursor"), Limit: 50}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 500 {
			return badRequest("limit must be an integer from 1 to 500.")
		}
		aq.Limit = n
	}
	if v := q.Get("actor"); v != "" {
		a, err := auditlog.ParseActor(v)
		if err != nil {
			return badRequest("actor must be session, key, admin or system, optionally followed by :id.")
		}
		aq.Actor = a
	}
	for _, p := range []struct {
		name string
		t    *time.Time
	}{{"since", &aq.Since}, {"until", &aq.Until}} {
		if v := q.Get(p.name); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				return badRequest(p.name + " must be an RFC 3339 time, e.g. 2026-12-01T00:00:00Z.")
			}
			*p.t = t
		}
	}
	page, err := s.kl.Audit.List(r.Context(), aq)
	if err != nil {
		return err
	}
	out := make([]auditEntryJSON, len(page.Entries))
	for i, e := range page.Entries {
		cs := e.Changes
		if cs == nil {
			cs = []auditlog.Change{}
		}
		out[i] = auditEntryJSON{ID: e.ID, Time: e.Time.UTC().Format(time.RFC3339Nano), Actor: e.Actor, Action: e.Action,
			Target: e.Target, Changes: cs, ClientIP: e.ClientIP, UserAgent: e.UserAgent}
	}
	body := map[string]any{"object": "list", "data": out, "has_more": page.NextCursor != ""}
	if page.NextCursor != "" {
		body["next_cursor"] = page.NextCursor
	}
	writeJSON(w, http.StatusOK, body)
	return nil
}
