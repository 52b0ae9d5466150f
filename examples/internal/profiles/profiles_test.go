package profiles

import (
	"errors"
	"testing"

	"github.com/keyledger/keyledger/credits"
)

func TestProfiles(t *testing.T) {
	for _, name := range Names() {
		p, err := Get(name)
		if err != nil || p.Name != name || !p.HasKeyType(p.DefaultKeyType) || p.Catalog == nil {
			t.Fatalf("%s: %+v %v", name, p, err)
		}
	}
	if _, err := Get("nope"); !errors.Is(err, ErrUnknownProfile) {
		t.Fatalf("unknown profile: %v", err)
	}
	ev, _ := Get(EmailVerify)
	if c, _ := ev.Prices.OperationCost(OpVerify, 3, 3); !c.Equal(credits.AmountFromMinor(15, 1)) {
		t.Fatalf("3 cached verifications cost %s, want 1.5", c)
	}
	if pro, _ := ev.Catalog.Plan("professional"); pro.MonthlyCap.IntPart() != 25000 {
		t.Fatalf("professional cap %s", pro.MonthlyCap)
	}
	ta, _ := Get(ToolAPI)
	if c, _ := ta.Prices.OperationCost(OpInspectDomain, 1, 0); !c.Equal(credits.AmountFromInt(3)) {
		t.Fatalf("inspect_domain costs %s", c)
	}
}
