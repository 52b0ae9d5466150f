// Package sqlrow scans result rows the same way over database/sql and
// pgx, for the SQL backends: both drivers' rows have Next, Scan and Err.
package sqlrow

// Scanner is one row of either driver.
type Scanner interface{ Scan(dest ...any) error }

// Rows is a result set of either driver.
type Rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

// Collect scans every row of rows with scan. The caller closes rows.
func Collect[T any](rows Rows, scan func(Scanner) (T, error)) ([]T, error) {
	var out []T
	err := Each(rows, scan, func(v T) error {
		out = append(out, v)
		return nil
	})
	return out, err
}

// Each scans every row of rows with scan and calls fn with it, stopping at
// the first error. The caller closes rows.
func Each[T any](rows Rows, scan func(Scanner) (T, error), fn func(T) error) error {
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return err
		}
		if err := fn(v); err != nil {
			return err
		}
	}
	return rows.Err()
}
