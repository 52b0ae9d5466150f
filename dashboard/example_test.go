package dashboard_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/keyledger/keyledger"
	"github.com/keyledger/keyledger/dashboard"
	"github.com/keyledger/keyledger/store/memstore"
)

// A host mounts the dashboard under a path prefix of its own mux. Browsers
// that are not signed in are sent to the sign-in page.
func ExampleNew() {
	kl, err := keyledger.New(memstore.New(), nil)
	if err != nil {
		panic(err)
	}
	defer kl.Close(context.Background())

	dash, err := dashboard.New(kl, &dashboard.Options{BasePath: "/dashboard", ProductName: "Acme API"})
	if err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/dashboard/", dash)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := client.Get(srv.URL + "/dashboard/keys")
	if err != nil {
		panic(err)
	}
	res.Body.Close()
	fmt.Println(res.StatusCode, res.Header.Get("Location"))

	res, err = client.Get(srv.URL + "/dashboard/signin")
	if err != nil {
		panic(err)
	}
	page, _ := io.ReadAll(res.Body)
	res.Body.Close()
	fmt.Println(res.StatusCode, strings.Contains(string(page), "Sign in to Acme API"))
	// Output:
	// 303 /dashboard/signin?next=%2Fdashboard%2Fkeys
	// 200 true
}
