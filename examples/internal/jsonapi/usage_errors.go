package jsonapi

import "github.com/keyledger/keyledger/usage"

// usageQueryErrors are the usage query errors that are the client's fault.
var usageQueryErrors = []error{usage.ErrInvalidQuery, usage.ErrInvalidCursor, usage.ErrInvalidTimeZone}
