package events_test

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger/account"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/store"
	"github.com/keyledger/keyledger/store/memstore"
)

// A customer adds a webhook endpoint (its signing secret is shown once)
// and low-balance thresholds; addresses inside the network are refused.
func ExampleService() {
	ctx := context.Background()
	st := memstore.New()
	accts, _ := account.NewService(store.Driver(st), nil)
	a, _ := accts.Create(ctx, account.CreateParams{Name: "Asha", Email: "asha@example.com"})

	svc := events.NewService(store.Driver(st), &events.Options{
		// Tests and examples resolve names themselves; the default is DNS.
		LookupIP: func(context.Context, string) ([]netip.Addr, error) {
			return []netip.Addr{netip.MustParseAddr("93.184.216.34")}, nil
		},
	})
	ep, err := svc.CreateEndpoint(ctx, a.ID, "https://hooks.example.com/keyledger", "alerts")
	fmt.Println(err, len(ep.Secret) > 20)

	_, err = svc.CreateEndpoint(ctx, a.ID, "https://169.254.169.254/latest/meta-data", "")
	fmt.Println(err)

	low, _ := svc.SetAlertThresholds(ctx, a.ID, []decimal.Decimal{decimal.NewFromInt(10), decimal.NewFromInt(100)})
	fmt.Println(low)

	list, _ := svc.Endpoints(ctx, a.ID)
	fmt.Printf("%s %q\n", list[0].URL, list[0].Secret)
	// Output:
	// <nil> true
	// events: webhook host resolves to a loopback, private, link-local or metadata address
	// [100 10]
	// https://hooks.example.com/keyledger ""
}
