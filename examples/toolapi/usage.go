//go:build !usagemerged

package main

import (
	"net/http"

	"github.com/keyledger/keyledger/apikey"
)

// GET /v1/me/usage (filled in once the usage Service lands).
func (s *api) listUsage(w http.ResponseWriter, r *http.Request, v apikey.Verified) {
	s.ok(w, http.StatusOK, map[string]any{"data": []any{}})
}
