//go:build !usagemerged

package jsonapi

var usageQueryErrors []error
