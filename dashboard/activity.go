package dashboard

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/keyledger/keyledger/auditlog"
)

// activityData is the Activity page: the account's audit log.
type activityData struct {
	Rows            []activityRow
	Action, Actor   string
	NextHref        string
	First           bool
	Actions, Actors []string
}

type activityRow struct {
	Time, Actor, Action, Target, Client string
	Changes                             []string
}

// activityActions are the action filters the page offers (prefixes).
var activityActions = []string{"account.*", "key.*", "credits.*", "plan.*", "password.*", "session.*", "email.*"}

func (h *Handler) activityPage(w http.ResponseWriter, r *http.Request, v *viewer) error {
	q := r.URL.Query()
	action, actor, cursor := q.Get("action"), q.Get("actor"), q.Get("cursor")
	aq := auditlog.Query{AccountID: v.Account.ID, Action: action, Cursor: cursor, Limit: 50}
	if len(action) > auditlog.MaxActionLen {
		return userErrorf("Actions are at most %d characters.", auditlog.MaxActionLen)
	}
	if actor != "" {
		a, err := auditlog.ParseActor(actor)
		if err != nil {
			return userErrorf("Unknown actor: choose session, key, admin or system.")
		}
		aq.Actor = a
	}
	p, err := h.kl.Audit.List(r.Context(), aq)
	if err != nil {
		return err
	}
	d := activityData{Action: action, Actor: actor, First: cursor == "", Actions: activityActions,
		Actors: []string{string(auditlog.ActorSession), string(auditlog.ActorKey), string(auditlog.ActorAdmin), string(auditlog.ActorSystem)}}
	if p.NextCursor != "" {
		nq := url.Values{"cursor": {p.NextCursor}}
		if action != "" {
			nq.Set("action", action)
		}
		if actor != "" {
			nq.Set("actor", actor)
		}
		d.NextHref = h.base + "/activity?" + nq.Encode()
	}
	for _, e := range p.Entries {
		row := activityRow{Time: e.Time.In(v.loc).Format("2006-01-02 15:04:05"), Actor: e.Actor.String(), Action: e.Action,
			Target: strings.TrimSpace(e.Target.Type + " " + e.Target.ID), Client: e.ClientIP}
		for _, c := range e.Changes {
			switch {
			case c.Before == "" && c.After == "":
				row.Changes = append(row.Changes, c.Field+" changed")
			case c.Before == "":
				row.Changes = append(row.Changes, c.Field+": "+c.After)
			default:
				row.Changes = append(row.Changes, c.Field+": "+c.Before+" → "+c.After)
			}
		}
		d.Rows = append(d.Rows, row)
	}
	return h.render(w, r, v, http.StatusOK, "activity", "Activity", d)
}
