// Package httpapi puts keyledger in front of a net/http handler: it extracts
// the API key, authorizes it (key, rate limits, credit hold), writes the
// rate-limit headers, captures the response status and size, and completes
// the request (usage record and ledger entry) when the handler returns, even
// if it panics or the client goes away. Errors become JSON bodies through
// one table per API style (OpenAI-style by default).
package httpapi
