package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// TestOpenAPIMatchesRoutes checks the served OpenAPI document against the
// router's table in both directions: every documented operation is a
// registered route and every registered route is documented, with its path
// parameters declared.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	g := startGateway(t)
	st, _, b := g.do("GET", "/openapi.json", "", nil)
	if st != 200 {
		t.Fatalf("GET /openapi.json: %d", st)
	}
	var doc struct {
		OpenAPI string `json:"openapi"`
		Paths   map[string]map[string]struct {
			Summary    string `json:"summary"`
			Parameters []struct {
				Name string `json:"name"`
				In   string `json:"in"`
			} `json:"parameters"`
			Responses map[string]any `json:"responses"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.OpenAPI != "3.1.0" {
		t.Fatalf("openapi %q", doc.OpenAPI)
	}
	documented := map[string]bool{}
	for path, ops := range doc.Paths {
		for method, op := range ops {
			documented[strings.ToUpper(method)+" "+path] = true
			if op.Summary == "" || len(op.Responses) == 0 {
				t.Errorf("%s %s: no summary or responses", method, path)
			}
			for _, seg := range strings.Split(path, "/") {
				name, ok := strings.CutPrefix(seg, "{")
				if !ok {
					continue
				}
				name = strings.TrimSuffix(name, "}")
				if !slices.ContainsFunc(op.Parameters, func(p struct {
					Name string `json:"name"`
					In   string `json:"in"`
				}) bool {
					return p.Name == name && p.In == "path"
				}) {
					t.Errorf("%s %s: path parameter %s not declared", method, path, name)
				}
			}
		}
	}
	s := &server{} // routes() only builds handlers; nothing runs
	registered := map[string]bool{}
	for _, rt := range s.routes() {
		registered[rt.method+" "+rt.pattern] = true
	}
	for r := range registered {
		if !documented[r] {
			t.Errorf("route %s is not in openapi.json", r)
		}
	}
	for d := range documented {
		if !registered[d] {
			t.Errorf("openapi.json documents %s, which is not a route", d)
		}
	}
}
