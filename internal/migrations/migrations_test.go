package migrations

import (
	"errors"
	"testing"
	"testing/fstest"
)

func TestLoad(t *testing.T) {
	fsys := fstest.MapFS{
		"m/0002_b.sql": {Data: []byte("B")},
		"m/0001_a.sql": {Data: []byte("A")},
	}
	ms, err := Load(fsys, "m")
	if err != nil || len(ms) != 2 || ms[0].Name != "0001_a.sql" || ms[1].SQL != "B" || ms[1].Version != 2 {
		t.Fatalf("%+v %v", ms, err)
	}
	for name, bad := range map[string]fstest.MapFS{
		"gap":      {"m/0001_a.sql": {}, "m/0003_c.sql": {}},
		"dup":      {"m/0001_a.sql": {}, "m/0001_b.sql": {}},
		"name":     {"m/first.sql": {}},
		"not sql":  {"m/0001_a.txt": {}},
		"no start": {"m/0002_a.sql": {}},
	} {
		if _, err := Load(bad, "m"); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
