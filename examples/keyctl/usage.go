//go:build !usagemerged

package main

import "context"

// usage is filled in once the usage Service lands.
func (c *cli) usage(args []string) (func(context.Context) error, error) {
	return nil, usageErr("usage: not available yet")
}
