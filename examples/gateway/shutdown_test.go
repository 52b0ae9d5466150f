package main

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// Closing the gateway closes its keep-alive connections to the upstream:
// the telemetry wrapper on the upstream client does not pass
// CloseIdleConnections on, and a host that closed and reopened the server
// kept up to 100 idle connections (two goroutines each) per instance.
func TestShutdownClosesUpstreamConnections(t *testing.T) {
	var mu sync.Mutex
	open := map[net.Conn]bool{}
	stub := httptest.NewUnstartedServer(stubUpstream())
	stub.Config.ConnState = func(c net.Conn, s http.ConnState) {
		mu.Lock()
		defer mu.Unlock()
		switch s {
		case http.StateNew:
			open[c] = true
		case http.StateClosed, http.StateHijacked:
			delete(open, c)
		}
	}
	stub.Start()
	defer stub.Close()
	openConns := func() int { mu.Lock(); defer mu.Unlock(); return len(open) }

	gw := newLoadGateway(t, "sqlite", stub.URL+"/v1")
	for i := range 4 {
		req, _ := http.NewRequest(http.MethodPost, gw.url+"/inference/v1/chat/completions", bytes.NewReader(loadBody))
		req.Header.Set("Authorization", "Bearer "+gw.keys[i])
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d: %s", i, resp.Status)
		}
	}
	if openConns() == 0 {
		t.Fatal("no connection to the upstream is open: the test reaches nothing")
	}
	gw.close()
	deadline := time.Now().Add(5 * time.Second)
	for openConns() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d upstream connections still open after the gateway closed", openConns())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
