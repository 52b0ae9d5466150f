package main

import (
	_ "embed"
	"net/http"
)

// openapiJSON is the OpenAPI 3.1 document of every route; a test checks it
// against the router's table in both directions.
//
//go:embed openapi.json
var openapiJSON []byte

// GET /openapi.json
func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(openapiJSON)
}
