package e2e

import "testing"

func TestMetric(t *testing.T) {
	body := []byte(`# HELP x_total X.
# TYPE x_total counter
x_total{result="ok",backend="sqlite"} 3
x_total{result="error",backend="sqlite"} 1
x_total{result="ok",backend="memory"} 2
y 7
`)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
		found  bool
	}{
		{"x_total", nil, 6, true},
		{"x_total", []string{`result="ok"`}, 5, true},
		{"x_total", []string{`result="ok"`, `backend="memory"`}, 2, true},
		{"x_total", []string{`result="none"`}, 0, false},
		{"y", nil, 7, true},
		{"x", nil, 0, false},
	} {
		if got, found := Metric(body, c.name, c.labels...); got != c.want || found != c.found {
			t.Errorf("Metric(%s, %v) = %v, %v; want %v, %v", c.name, c.labels, got, found, c.want, c.found)
		}
	}
}
