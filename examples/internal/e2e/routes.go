package e2e

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// Serve sends one request to h in-process and returns the recorded answer.
// path may hold escaped segments; rawQuery is set as is (a fuzzed query
// need not be valid); auth, when set, is the whole Authorization header; a
// nil body is no body; headers are name, value pairs.
func Serve(h http.Handler, method, path, rawQuery, auth string, body []byte, headers ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, "/", bytes.NewReader(body))
	req.URL.Path, req.URL.RawPath, req.URL.RawQuery = path, "", rawQuery
	if u, err := url.Parse(path); err == nil {
		req.URL.Path, req.URL.RawPath = u.Path, u.RawPath
	}
	req.RequestURI = req.URL.RequestURI()
	if body == nil {
		req.Body, req.ContentLength = http.NoBody, 0
	} else {
		req.Header.Set("Content-Type", "application/json")
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// FillPattern turns a ServeMux pattern's path ("/v1/x/{id}/y/{key_id}")
// into a request path: each {name} takes param (escaped) when param is
// set and name is not in fixed, else ids[name]. fixed names always take
// ids[name] (the caller's own account, say).
func FillPattern(pattern, param string, ids map[string]string, fixed ...string) string {
	segs := strings.Split(pattern, "/")
	for i, seg := range segs {
		name, ok := strings.CutPrefix(seg, "{")
		if !ok {
			continue
		}
		name = strings.TrimSuffix(strings.TrimSuffix(name, "}"), "...")
		isFixed := false
		for _, f := range fixed {
			isFixed = isFixed || f == name
		}
		if param != "" && !isFixed {
			segs[i] = url.PathEscape(param)
		} else {
			segs[i] = ids[name]
		}
	}
	return strings.Join(segs, "/")
}

// PathParams returns the {names} of a pattern.
func PathParams(pattern string) []string {
	var out []string
	for _, seg := range strings.Split(pattern, "/") {
		if name, ok := strings.CutPrefix(seg, "{"); ok {
			out = append(out, strings.TrimSuffix(strings.TrimSuffix(name, "}"), "..."))
		}
	}
	return out
}

// CheckAnswer fails t for a 5xx answer, and for an error answer that is
// not a JSON error body (Content-Type application/json, an "error" object
// with a message: the shape of every example's errors); a JSON success
// must be valid JSON.
func CheckAnswer(t testing.TB, what string, rec *httptest.ResponseRecorder) {
	t.Helper()
	ct, body := rec.Header().Get("Content-Type"), rec.Body.Bytes()
	if rec.Code >= 500 {
		t.Fatalf("%s: %d %s", what, rec.Code, body)
	}
	if rec.Code >= 400 {
		var e struct {
			Error *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if !strings.HasPrefix(ct, "application/json") || json.Unmarshal(body, &e) != nil || e.Error == nil || e.Error.Message == "" {
			t.Fatalf("%s: %d %q is not a JSON error: %s", what, rec.Code, ct, body)
		}
		return
	}
	if strings.HasPrefix(ct, "application/json") && !json.Valid(body) {
		t.Fatalf("%s: %d invalid JSON: %s", what, rec.Code, body)
	}
}

// NotFound fails t unless rec is a 404 JSON error whose code is
// "not_found".
func NotFound(t testing.TB, what string, rec *httptest.ResponseRecorder) {
	t.Helper()
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if rec.Code != 404 || json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Error.Code != "not_found" {
		t.Errorf("%s: %d %s, want 404 not_found", what, rec.Code, rec.Body)
	}
}

// CrossTenant checks a router's table for cross-tenant access: for every
// pattern ("METHOD /path/{id}") with path ids, call (as tenant A) of the
// path with every id taken from foreign (tenant B's) must answer 404
// not_found. A
// pattern without ids must be in global, which says why another tenant's
// ids cannot reach through it; an id foreign lacks fails the test, so a new
// route cannot go untested. It returns the number of routes with ids.
func CrossTenant(t testing.TB, patterns []string, global, foreign map[string]string, call func(method, pattern, path string) *httptest.ResponseRecorder) int {
	t.Helper()
	var scoped int
	for _, p := range patterns {
		method, path, _ := strings.Cut(p, " ")
		params := PathParams(path)
		if len(params) == 0 {
			if _, ok := global[p]; !ok {
				t.Errorf("%s has no path ids and is not in the test's global routes: say why another tenant cannot reach through it", p)
			}
			continue
		}
		missing := false
		for _, name := range params {
			if _, ok := foreign[name]; !ok {
				t.Errorf("%s: no id of the other tenant for {%s}; add one to the test", p, name)
				missing = true
			}
		}
		if missing {
			continue
		}
		scoped++
		filled := FillPattern(path, "", foreign)
		NotFound(t, method+" "+filled+" with another tenant's ids", call(method, path, filled))
	}
	return scoped
}

// AddRouteSeeds adds the seed corpus of a route fuzz target whose inputs
// are (route index, path id, query, credential, body): for route i, one
// entry with everything empty (the valid credential and ids), one with
// the given bad query, credential and body, and one per seed — a seed
// that is not JSON and holds "=" is a query, anything else a body.
func AddRouteSeeds(f *testing.F, i int, badQuery, badCred, badBody string, seeds []string) {
	f.Add(uint8(i), "", "", "", []byte(nil))
	f.Add(uint8(i), "", badQuery, badCred, []byte(badBody))
	for _, s := range seeds {
		if strings.Contains(s, "=") && !strings.HasPrefix(s, "{") && !strings.HasPrefix(s, "[") {
			f.Add(uint8(i), "", s, "", []byte(nil))
		} else {
			f.Add(uint8(i), "", "", "", []byte(s))
		}
	}
}
