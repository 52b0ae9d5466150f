// Package migrations loads the embedded, versioned SQL migrations of the
// SQL backends: files named NNNN_name.sql, numbered 1..n without gaps.
// Applying them (one transaction each, recorded in schema_migrations) is
// each backend's own work, since locking differs per database.
package migrations

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
)

// ErrInvalid reports a migration directory that is not NNNN_name.sql files
// numbered 1..n.
var ErrInvalid = errors.New("migrations: invalid migration files")

// Migration is one schema step.
type Migration struct {
	Version int
	Name    string // the file name
	SQL     string
}

// Load reads the migrations in dir of fsys, ordered by version.
func Load(fsys fs.FS, dir string) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, err
	}
	var ms []Migration
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || !strings.HasSuffix(e.Name(), ".sql") {
			return nil, fmt.Errorf("%w: bad file name %q", ErrInvalid, e.Name())
		}
		b, err := fs.ReadFile(fsys, dir+"/"+e.Name())
		if err != nil {
			return nil, err
		}
		ms = append(ms, Migration{Version: v, Name: e.Name(), SQL: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	for i, m := range ms {
		if m.Version != i+1 {
			return nil, fmt.Errorf("%w: not numbered 1..n at %s", ErrInvalid, m.Name)
		}
	}
	return ms, nil
}

// Latest returns the schema version the migrations in dir of fsys bring a
// database to (0 if they do not load).
func Latest(fsys fs.FS, dir string) int {
	ms, _ := Load(fsys, dir)
	return len(ms)
}

// Apply applies the migrations in dir of fsys in order, each with apply,
// which runs it in its own transaction unless the database has it already
// and refuses a database newer than latest. backend names the package in
// errors.
func Apply(ctx context.Context, fsys fs.FS, dir, backend string, apply func(ctx context.Context, m Migration, latest int) error) error {
	ms, err := Load(fsys, dir)
	if err != nil {
		return fmt.Errorf("%s: %w", backend, err)
	}
	for _, m := range ms {
		if err := apply(ctx, m, len(ms)); err != nil {
			return err
		}
	}
	return nil
}
