package dashboard

import (
	"strconv"
	"strings"

	"github.com/shopspring/decimal"

	"github.com/keyledger/keyledger/credits"
	"github.com/keyledger/keyledger/usage"
)

// chart is the usage page's inline SVG: a bar of cost and a point of
// tokens per day, each on its own scale (cost on the left axis, tokens on
// the right). It is drawn with presentation attributes only, so the page
// needs no inline style.
type chart struct {
	Width, Height            int
	Left, Right, Top, Bottom int // plot area
	Bars                     []chartBar
	Line                     string // polyline points of tokens
	Dots                     []chartDot
	XLabels                  []chartLabel
	MaxCost, MaxTokens       string
	Empty                    bool
	Summary                  string // the chart's text alternative
}

type chartBar struct {
	X, Y, W, H float64
	Day, Title string
}

type chartDot struct {
	X, Y  float64
	Title string
}

type chartLabel struct {
	X    float64
	Text string
}

const (
	chartW, chartH            = 760, 260
	padLeft, padRight         = 70, 70
	padTop, padBottom         = 16, 34
	maxXLabels                = 7
	plotW, plotH      float64 = chartW - padLeft - padRight, chartH - padTop - padBottom
)

// round1 rounds to one decimal for compact SVG.
func round1(f float64) float64 {
	return float64(int64(f*10+0.5)) / 10
}

// buildChart draws days (every day of the range, in order) from the rows of
// a summary grouped by date. Costs are scaled with exact decimals; only the
// pixel positions are floats.
func buildChart(days []string, rows []usage.SummaryRow, u credits.Unit, currency string) chart {
	c := chart{Width: chartW, Height: chartH, Left: padLeft, Right: chartW - padRight, Top: padTop, Bottom: chartH - padBottom}
	byDay := make(map[string]usage.SummaryRow, len(rows))
	maxCost, maxTok := decimal.Zero, int64(0)
	for _, r := range rows {
		byDay[r.Date] = r
		if d := r.Cost.Decimal(); d.GreaterThan(maxCost) {
			maxCost = d
		}
		maxTok = max(maxTok, r.TotalTokens)
	}
	n := len(days)
	if n == 0 {
		c.Empty = true
		return c
	}
	c.Empty = maxCost.IsZero() && maxTok == 0
	c.MaxCost, c.MaxTokens = u.Format(credits.NewAmount(maxCost)), formatInt(maxTok)
	slot := plotW / float64(n)
	barW := max(slot*0.7, 1)
	var pts []string
	var totalCost decimal.Decimal
	var totalTok int64
	for i, day := range days {
		r := byDay[day]
		x := float64(padLeft) + slot*float64(i)
		title := day + ": " + u.Format(r.Cost) + " " + currency + ", " + formatInt(r.TotalTokens) + " tokens, " + formatInt(r.Requests) + " requests"
		hgt := 0.0
		if maxCost.IsPositive() {
			hgt = r.Cost.Decimal().Div(maxCost).InexactFloat64() * plotH
		}
		if r.Cost.IsPositive() && hgt < 1 {
			hgt = 1 // a day with any cost stays visible
		}
		c.Bars = append(c.Bars, chartBar{X: round1(x + (slot-barW)/2), Y: round1(float64(padTop) + plotH - hgt), W: round1(barW), H: round1(hgt), Day: day, Title: title})
		ty := float64(padTop) + plotH
		if maxTok > 0 {
			ty -= float64(r.TotalTokens) / float64(maxTok) * plotH
		}
		cx := round1(x + slot/2)
		pts = append(pts, strconv.FormatFloat(cx, 'f', -1, 64)+","+strconv.FormatFloat(round1(ty), 'f', -1, 64))
		c.Dots = append(c.Dots, chartDot{X: cx, Y: round1(ty), Title: title})
		totalCost = totalCost.Add(r.Cost.Decimal())
		totalTok += r.TotalTokens
	}
	c.Line = strings.Join(pts, " ")
	step := max(1, (n+maxXLabels-1)/maxXLabels)
	label := func(i int) chartLabel {
		return chartLabel{X: round1(float64(padLeft) + slot*(float64(i)+0.5)), Text: days[i][5:]}
	}
	last := 0
	for i := 0; i < n; i += step {
		c.XLabels = append(c.XLabels, label(i))
		last = i
	}
	// The last day always has its label: it replaces the previous one if
	// they would be closer than half a step.
	if last != n-1 {
		if n-1-last < (step+1)/2 && len(c.XLabels) > 1 {
			c.XLabels = c.XLabels[:len(c.XLabels)-1]
		}
		c.XLabels = append(c.XLabels, label(n-1))
	}
	c.Summary = "Daily cost and tokens from " + days[0] + " to " + days[n-1] + ": " + u.Format(credits.NewAmount(totalCost)) + " " + currency + " and " + formatInt(totalTok) + " tokens in total."
	return c
}
