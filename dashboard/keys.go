package dashboard

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/apikey"
	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/errkind"
)

// timeLayout shows times in the account's zone.
const timeLayout = "2006-01-02 15:04 MST"

// maxKeyPages bounds how many pages of keys a name lookup reads (500 each).
const maxKeyPages = 20

// keyStatus is a key's status as a person sees it: an active key past its
// expiry is expired.
func keyStatus(k apikey.APIKey, now time.Time) string {
	if k.Status == apikey.StatusActive && !k.ExpiresAt.IsZero() && !now.Before(k.ExpiresAt) {
		return string(apikey.StatusExpired)
	}
	return string(k.Status)
}

// keyRow is a key as the pages show it: masked, never the secret.
type keyRow struct {
	ID, Name, Hint, Type, Status string
	Models                       []string
	Created, LastUsed, Expires   string
	GraceUntil                   string
	Active                       bool
	// Limit is the key's spend limit ("" if none), with its use in the
	// current period.
	Limit, Period, Spent, Remaining, Resets string
}

// withSpend fills the spend-limit columns of row from ks.
func (h *Handler) withSpend(row *keyRow, ks credits.KeySpend, v *viewer) {
	u := h.kl.Credits.Unit()
	row.Limit, row.Period = u.Format(ks.Limit), string(ks.Period)
	row.Spent, row.Remaining = u.Format(ks.Spent.Add(ks.Held)), u.Format(ks.Remaining)
	if !ks.ResetsAt.IsZero() {
		row.Resets = ks.ResetsAt.In(v.loc).Format(timeLayout)
	}
}

// keyRowSpend is keyRow with the key's spend limit, if it has one.
func (h *Handler) keyRowSpend(r *http.Request, k apikey.APIKey, v *viewer) (keyRow, error) {
	row := h.keyRow(k, v)
	if h.kl.Credits == nil {
		return row, nil
	}
	ks, ok, err := h.kl.KeySpend(r.Context(), v.Account.ID, k.ID)
	if err != nil || !ok {
		return row, err
	}
	h.withSpend(&row, ks, v)
	return row, nil
}

func (h *Handler) keyRow(k apikey.APIKey, v *viewer) keyRow {
	now := h.o.Now()
	st := keyStatus(k, now)
	row := keyRow{ID: k.ID, Name: k.Name, Hint: k.Hint + "…", Type: k.Type, Status: st, Models: k.Models,
		Created: k.CreatedAt.In(v.loc).Format(timeLayout), Active: st == string(apikey.StatusActive)}
	if !k.LastUsedAt.IsZero() {
		row.LastUsed = k.LastUsedAt.In(v.loc).Format(timeLayout)
	}
	if !k.ExpiresAt.IsZero() {
		row.Expires = k.ExpiresAt.In(v.loc).Format(timeLayout)
	}
	// A revoked, disabled or expired key's previous secret fails too: only
	// an active key has an old secret in its grace period.
	if row.Active && k.GraceUntil.After(now) {
		row.GraceUntil = k.GraceUntil.In(v.loc).Format(timeLayout)
	}
	return row
}

// allKeys returns the account's keys (at most maxKeyPages pages).
func (h *Handler) allKeys(r *http.Request, v *viewer) ([]apikey.APIKey, error) {
	var all []apikey.APIKey
	cursor := ""
	for range maxKeyPages {
		p, err := h.kl.Keys.List(r.Context(), v.Account.ID, apikey.ListParams{Cursor: cursor, Limit: 500})
		if err != nil {
			return nil, err
		}
		all = append(all, p.Keys...)
		if p.NextCursor == "" {
			break
		}
		cursor = p.NextCursor
	}
	return all, nil
}

// keyForm is the input of the create and edit forms, echoed back when it
// is refused.
type keyForm struct {
	ID, Name, Type, Expires, ModelsText string
	Models                              []string
}

// keysData is the keys page.
type keysData struct {
	Keys         []keyRow
	Cursor, Next string
	Form         keyForm
	Types        []string
	TypeNotes    []typeNote
	ModelChoices []string
	Today        string
}

func (h *Handler) keysPage(w http.ResponseWriter, r *http.Request, v *viewer) error {
	return h.showKeys(w, r, v, http.StatusOK, keyForm{Type: h.defaultType()}, "")
}

func (h *Handler) defaultType() string {
	if len(h.keyTypes) > 0 {
		return h.keyTypes[0]
	}
	return ""
}

func (h *Handler) showKeys(w http.ResponseWriter, r *http.Request, v *viewer, status int, f keyForm, errMsg string) error {
	cursor := r.URL.Query().Get("cursor")
	p, err := h.kl.Keys.List(r.Context(), v.Account.ID, apikey.ListParams{Cursor: cursor, Limit: 50})
	if err != nil {
		return err
	}
	d := keysData{Cursor: cursor, Next: p.NextCursor, Form: f, Types: h.keyTypes, TypeNotes: h.typeNotes(), ModelChoices: h.models,
		Today: h.o.Now().In(v.loc).Format(dateLayout)}
	var spends map[string]credits.KeySpend
	if h.kl.Credits != nil {
		if spends, err = h.kl.KeySpends(r.Context(), v.Account.ID); err != nil {
			return err
		}
	}
	for _, k := range p.Keys {
		row := h.keyRow(k, v)
		if ks, ok := spends[k.ID]; ok {
			h.withSpend(&row, ks, v)
		}
		d.Keys = append(d.Keys, row)
	}
	return h.renderWithError(w, r, v, status, "keys", "API keys", d, errMsg)
}

// renderWithError renders a page that shows a refused form's message.
func (h *Handler) renderWithError(w http.ResponseWriter, r *http.Request, v *viewer, status int, page, title string, data any, errMsg string) error {
	vw := h.newView(title, data)
	vw.Active = Section(strings.SplitN(strings.TrimPrefix(r.URL.Path, "/"), "/", 2)[0])
	vw.SignedIn, vw.CSRF, vw.Account = true, v.csrf, v.Account.Email
	vw.SignOut, vw.SignOutURL = h.o.Authenticate == nil, h.o.SignOutURL
	vw.Error = errMsg
	if status == http.StatusOK {
		done := r.URL.Query().Get("done")
		vw.Notice = notices[done]
		if done == "welcome" {
			vw.Notice = h.welcome(r, v)
		}
	}
	return h.write(w, status, page, vw)
}

// keyError turns a refused key change into a message for the form, or
// returns "" for errors that are not the person's input.
func keyError(err error) string {
	var ue *UserError
	switch {
	case errors.As(err, &ue):
		return ue.Message
	case errors.Is(err, apikey.ErrInvalidName):
		return "The name must be 1 to 120 characters."
	case errors.Is(err, apikey.ErrInvalidType):
		return "Choose a key type from the list."
	case errors.Is(err, apikey.ErrInvalidModels):
		return "The model list is not valid."
	case errors.Is(err, apikey.ErrInvalidExpiry):
		return "The expiry must be in the future and before 2200."
	}
	return ""
}

// readKeyForm reads and checks the fields of the create and edit forms.
func (h *Handler) readKeyForm(r *http.Request, v *viewer, withTypeAndExpiry bool) (keyForm, []string, time.Time, error) {
	f := keyForm{Name: r.PostForm.Get("name"), Type: r.PostForm.Get("type"), Expires: r.PostForm.Get("expires"),
		ModelsText: r.PostForm.Get("models_text")}
	vals := append(append([]string(nil), r.PostForm["models"]...), f.ModelsText)
	models, err := parseModels(vals, h.models)
	f.Models = models
	if err != nil {
		return f, nil, time.Time{}, err
	}
	var exp time.Time
	if withTypeAndExpiry {
		if f.Type == "" {
			f.Type = h.defaultType()
		}
		if !contains(h.keyTypes, f.Type) {
			return f, nil, time.Time{}, userErrorf("Choose a key type from the list.")
		}
		if exp, err = parseExpiry(f.Expires, v.loc, h.o.Now()); err != nil {
			return f, nil, time.Time{}, err
		}
	}
	return f, models, exp, nil
}

// newKeyData is the page that shows a new secret once.
type newKeyData struct {
	Raw     string
	Key     keyRow
	Rotated bool
}

func (h *Handler) createKey(w http.ResponseWriter, r *http.Request, v *viewer) error {
	f, models, exp, err := h.readKeyForm(r, v, true)
	var raw apikey.RawKey
	var k apikey.APIKey
	if err == nil {
		raw, k, err = h.kl.Keys.Create(r.Context(), apikey.CreateParams{AccountID: v.Account.ID, Name: f.Name, Type: f.Type, Models: models, ExpiresAt: exp})
	}
	if err != nil {
		if msg := keyError(err); msg != "" {
			return h.showKeys(w, r, v, http.StatusBadRequest, f, msg)
		}
		return err
	}
	return h.showOnce(w, r, v, slotSecret{Raw: raw.Reveal(), KeyID: k.ID})
}

// showOnce puts a new secret in a slot and redirects to the page that
// shows it (POST → redirect → GET): reloading that page creates nothing.
func (h *Handler) showOnce(w http.ResponseWriter, r *http.Request, v *viewer, s slotSecret) error {
	id, err := h.putSecret(r.Context(), v.Account.ID, s)
	if err != nil {
		return err
	}
	h.redirect(w, r, "/keys/new?slot="+id)
	return nil
}

// newKeyPage shows a new or rotated key's secret once, from its slot; a
// reload finds the slot empty and says so.
func (h *Handler) newKeyPage(w http.ResponseWriter, r *http.Request, v *viewer) error {
	s, err := h.takeSecret(r.Context(), v.Account.ID, r.URL.Query().Get("slot"))
	if errors.Is(err, ErrNotFound) {
		h.redirect(w, r, "/keys?done=shown")
		return nil
	}
	if err != nil {
		return err
	}
	k, err := h.kl.Keys.Get(r.Context(), v.Account.ID, s.KeyID)
	if err != nil {
		return err
	}
	title := "Your new API key"
	if s.Rotated {
		title = "Your rotated API key"
	}
	w.Header().Set("Cache-Control", "no-store")
	return h.render(w, r, v, http.StatusOK, "newkey", title, newKeyData{Raw: s.Raw, Key: h.keyRow(k, v), Rotated: s.Rotated})
}

// editKeyData is the edit page of one key.
type editKeyData struct {
	Key          keyRow
	Form         keyForm
	ModelChoices []string
	Graces       any
	// LimitForm is the spend-limit form; Periods its choices; Ledger
	// whether the dashboard has a ledger to keep limits in.
	LimitForm limitForm
	Periods   any
	Ledger    bool
	Currency  string
}

// limitForm is the input of the spend-limit form, echoed back when it is
// refused.
type limitForm struct{ Amount, Period string }

func (h *Handler) editData(r *http.Request, k apikey.APIKey, v *viewer, f keyForm) (editKeyData, error) {
	row, err := h.keyRowSpend(r, k, v)
	if err != nil {
		return editKeyData{}, err
	}
	lf := limitForm{Period: "day"}
	if row.Limit != "" {
		lf = limitForm{Amount: row.Limit, Period: row.Period}
	}
	return editKeyData{Key: row, Form: f, ModelChoices: h.models, LimitForm: lf, Periods: periodChoices,
		Ledger: h.kl.Credits != nil, Currency: h.o.Currency}, nil
}

func (h *Handler) editKeyPage(w http.ResponseWriter, r *http.Request, v *viewer) error {
	k, err := h.kl.Keys.Get(r.Context(), v.Account.ID, r.PathValue("id"))
	if err != nil {
		return err
	}
	f := keyForm{ID: k.ID, Name: k.Name, Models: k.Models}
	if len(h.models) == 0 {
		f.ModelsText = strings.Join(k.Models, ", ")
	}
	d, err := h.editData(r, k, v, f)
	if err != nil {
		return err
	}
	return h.render(w, r, v, http.StatusOK, "editkey", "Edit key", d)
}

// setKeyLimit sets (action "set") or removes (action "clear") a key's
// spend limit from the edit page's form.
func (h *Handler) setKeyLimit(w http.ResponseWriter, r *http.Request, v *viewer) error {
	k, err := h.kl.Keys.Get(r.Context(), v.Account.ID, r.PathValue("id"))
	if err != nil {
		return err
	}
	if h.kl.Credits == nil {
		return ErrNotFound
	}
	var l *keyledger.SpendLimit
	lf := limitForm{Amount: r.PostForm.Get("amount"), Period: r.PostForm.Get("period")}
	if r.PostForm.Get("action") != "clear" {
		sl, perr := parseSpendLimit(lf.Amount, lf.Period, h.kl.Credits.Unit(), h.o.Currency)
		if perr != nil {
			err = perr
		} else {
			l = &sl
		}
	}
	if err == nil {
		_, err = h.kl.SetKeySpendLimit(r.Context(), v.Account.ID, k.ID, l)
	}
	if err != nil {
		msg := keyError(err)
		if msg == "" && errkind.Of(err) == errkind.Invalid {
			msg = "Enter a positive amount and choose a period."
		}
		if msg == "" {
			return err
		}
		f := keyForm{ID: k.ID, Name: k.Name, Models: k.Models}
		d, derr := h.editData(r, k, v, f)
		if derr != nil {
			return derr
		}
		d.LimitForm = lf
		return h.renderWithError(w, r, v, http.StatusBadRequest, "editkey", "Edit key", d, msg)
	}
	done := "limit"
	if l == nil {
		done = "limit-removed"
	}
	h.redirect(w, r, "/keys?done="+done)
	return nil
}

func (h *Handler) updateKey(w http.ResponseWriter, r *http.Request, v *viewer) error {
	k, err := h.kl.Keys.Get(r.Context(), v.Account.ID, r.PathValue("id"))
	if err != nil {
		return err
	}
	f, models, _, err := h.readKeyForm(r, v, false)
	f.ID = k.ID
	if err == nil {
		if models == nil {
			models = []string{}
		}
		_, err = h.kl.Keys.Update(r.Context(), v.Account.ID, k.ID, apikey.UpdateParams{Name: &f.Name, Models: &models})
	}
	if err != nil {
		if msg := keyError(err); msg != "" {
			d, derr := h.editData(r, k, v, f)
			if derr != nil {
				return derr
			}
			return h.renderWithError(w, r, v, http.StatusBadRequest, "editkey", "Edit key", d, msg)
		}
		return err
	}
	h.redirect(w, r, "/keys?done=updated")
	return nil
}

func (h *Handler) rotateKeyPage(w http.ResponseWriter, r *http.Request, v *viewer) error {
	k, err := h.kl.Keys.Get(r.Context(), v.Account.ID, r.PathValue("id"))
	if err != nil {
		return err
	}
	return h.render(w, r, v, http.StatusOK, "rotatekey", "Rotate key", editKeyData{Key: h.keyRow(k, v), Graces: graceChoices})
}

func (h *Handler) rotateKey(w http.ResponseWriter, r *http.Request, v *viewer) error {
	k, err := h.kl.Keys.Get(r.Context(), v.Account.ID, r.PathValue("id"))
	if err != nil {
		return err
	}
	grace, err := parseGrace(r.PostForm.Get("grace"))
	if err != nil {
		return err
	}
	raw, k, err := h.kl.Keys.Rotate(r.Context(), v.Account.ID, k.ID, grace)
	if err != nil {
		return err
	}
	return h.showOnce(w, r, v, slotSecret{Raw: raw.Reveal(), KeyID: k.ID, Rotated: true})
}

func (h *Handler) revokeKeyPage(w http.ResponseWriter, r *http.Request, v *viewer) error {
	k, err := h.kl.Keys.Get(r.Context(), v.Account.ID, r.PathValue("id"))
	if err != nil {
		return err
	}
	return h.render(w, r, v, http.StatusOK, "revokekey", "Revoke key", editKeyData{Key: h.keyRow(k, v)})
}

func (h *Handler) revokeKey(w http.ResponseWriter, r *http.Request, v *viewer) error {
	if _, err := h.kl.Keys.Revoke(r.Context(), v.Account.ID, r.PathValue("id")); err != nil {
		return err
	}
	h.redirect(w, r, "/keys?done=revoked")
	return nil
}

// typeNote explains one key type on the creation form.
type typeNote struct{ Type, Note string }

func (h *Handler) typeNotes() []typeNote {
	var out []typeNote
	for _, t := range h.keyTypes {
		if n := h.o.KeyTypeNotes[t]; n != "" {
			out = append(out, typeNote{Type: t, Note: n})
		}
	}
	return out
}

// welcome is the notice after sign-up: it names the free credits the plan
// granted, if any.
func (h *Handler) welcome(r *http.Request, v *viewer) string {
	if h.kl.Credits != nil {
		if b, err := h.kl.Credits.Balance(r.Context(), v.Account.ID); err == nil && b.IsPositive() {
			amount := h.kl.Credits.Unit().Format(b)
			if h.o.Currency != "" {
				amount += " " + h.o.Currency
			}
			return "Welcome! Your account is ready, with " + amount + " of free credits to try the API. Create an API key to get started."
		}
	}
	return notices["welcome"]
}
