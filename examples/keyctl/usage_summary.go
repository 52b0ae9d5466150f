package main

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/keyledger/keyledger/examples/internal/query"
	"github.com/keyledger/keyledger/usage"
)

// usage prints the account's usage summary over whole local days: -from
// and -to inclusive (the last 30 days by default), grouped by -group-by,
// in the account's time zone unless -timezone names another.
func (c *cli) usage(args []string) (func(context.Context) error, error) {
	fs := c.flags("usage")
	acct := fs.String("account", "", "account ID")
	from := fs.String("from", "", "first day, YYYY-MM-DD (29 days before -to if empty)")
	to := fs.String("to", "", "last day, YYYY-MM-DD (today if empty)")
	groupBy := fs.String("group-by", "date", "comma-separated: date, model, key, endpoint")
	tz := fs.String("timezone", "", "IANA time zone of the days (the account's if empty)")
	pos, err := parse(fs, args)
	if err == nil {
		err = errors.Join(noArgs("usage", pos), required("account", *acct))
	}
	if err != nil {
		return nil, err
	}
	groups, err := query.GroupBy(*groupBy)
	if err != nil {
		return nil, usageErr("-group-by: %v", err)
	}
	for _, d := range []struct{ name, v string }{{"from", *from}, {"to", *to}} {
		if d.v != "" {
			if _, err := query.Date(d.v); err != nil {
				return nil, usageErr("-%s: %v", d.name, err)
			}
		}
	}
	return func(ctx context.Context) error {
		a, err := c.kl.Accounts.Get(ctx, *acct)
		if err != nil {
			return err
		}
		zone := *tz
		if zone == "" {
			zone = a.TimeZone
		}
		loc, err := usage.LoadZone(zone)
		if err != nil {
			return usageErr("-timezone: %v", err)
		}
		q := usage.SummaryQuery{AccountID: a.ID, From: *from, To: *to, GroupBy: groups, TimeZone: zone}
		if q.To == "" {
			q.To = time.Now().In(loc).Format(time.DateOnly)
		}
		if q.From == "" {
			end, _ := query.Date(q.To)
			q.From = end.AddDate(0, 0, -29).Format(time.DateOnly)
		}
		rows, err := c.kl.Usage.Summary(ctx, q)
		if err != nil {
			return err
		}
		if rows == nil {
			rows = []usage.SummaryRow{}
		}
		names := make([]string, len(groups))
		for i, g := range groups {
			names[i] = string(g)
		}
		return c.print(map[string]any{
			"account_id": a.ID, "from": q.From, "to": q.To, "time_zone": zone,
			"group_by": strings.Join(names, ","), "data": rows,
		})
	}, nil
}
