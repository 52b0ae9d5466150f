package dashboard

import (
	"fmt"
	"testing"
	"time"

	"github.com/keyledger/keyledger/credits"
)

// The last day of the usage chart always has its label, and labels never
// crowd each other.
func TestChartLabelsTheLastDay(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for n := 1; n <= 62; n++ {
		days := make([]string, n)
		for i := range days {
			days[i] = start.AddDate(0, 0, i).Format(dateLayout)
		}
		c := buildChart(days, nil, credits.INR(), "INR")
		if len(c.XLabels) == 0 || c.XLabels[len(c.XLabels)-1].Text != days[n-1][5:] {
			t.Fatalf("%d days: labels %v lack the last day %s", n, c.XLabels, days[n-1])
		}
		if len(c.XLabels) > maxXLabels+1 {
			t.Fatalf("%d days: %d labels", n, len(c.XLabels))
		}
		for i := 1; i < len(c.XLabels); i++ {
			if gap := c.XLabels[i].X - c.XLabels[i-1].X; gap < 30 {
				t.Fatalf("%d days: labels %s and %s %v apart", n, c.XLabels[i-1].Text, c.XLabels[i].Text, fmt.Sprint(gap))
			}
		}
	}
}
