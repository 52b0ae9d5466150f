package archtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const module = "github.com/keyledger/keyledger"

// domains are the pure packages; each is checked if it exists yet.
var domains = []string{"account", "apikey", "credits", "usage", "ratelimit", "events", "auditlog"}

// allowed are the non-standard import path prefixes a domain may depend on.
var allowed = []string{
	"github.com/google/uuid",
	"golang.org/x/crypto/",
	"golang.org/x/sys/", // required by x/crypto's argon2 and sha3 internals
	"github.com/shopspring/decimal",
	module + "/internal/",
	module + "/errkind", // the leaf package of error kinds (TestErrkindIsALeaf)
}

// domainEdges are the only imports allowed between domains (the lead's
// layering decision): usage sits on the credits ledger, since a metered
// record and its charge commit in one transaction.
var domainEdges = map[string][]string{
	"usage": {"credits"},
}

// goTool is the go command: the one on PATH, else the one under $GOROOT.
func goTool(t *testing.T) string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	if root := os.Getenv("GOROOT"); root != "" {
		return filepath.Join(root, "bin", "go")
	}
	t.Fatal("no go command on PATH and GOROOT unset: cannot list the packages")
	return ""
}

func repoRoot(t *testing.T) string {
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "..", "..")
}

// deps lists the non-standard transitive dependencies of pkg (itself excluded).
func deps(t *testing.T, root, pkg string) []string {
	t.Helper()
	cmd := exec.Command(goTool(t), "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", "./"+pkg)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list %s: %v\n%s", pkg, err, out)
	}
	var ds []string
	for _, l := range strings.Fields(string(out)) {
		if l != module+"/"+pkg {
			ds = append(ds, l)
		}
	}
	return ds
}

func TestDomainPackagesStayPure(t *testing.T) {
	root := repoRoot(t)
	for _, d := range domains {
		if _, err := os.Stat(filepath.Join(root, d)); err != nil {
			continue // not written yet
		}
		for _, dep := range deps(t, root, d) {
			ok := false
			for _, a := range allowed {
				if dep == strings.TrimSuffix(a, "/") || strings.HasPrefix(dep, a) {
					ok = true
				}
			}
			for _, e := range domainEdges[d] {
				if dep == module+"/"+e {
					ok = true // its own deps are checked as a domain of their own
				}
			}
			if !ok {
				t.Errorf("domain package %s depends on %s; domains may import only the standard library, %v", d, dep, allowed)
			}
		}
		// net/http is standard library but an adapter concern.
		cmd := exec.Command(goTool(t), "list", "-deps", "./"+d)
		cmd.Dir = root
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Fields(string(out)) {
			if l == "net/http" || l == "database/sql" {
				t.Errorf("domain package %s depends on %s", d, l)
			}
		}
	}
}

func TestStoreLayerDoesNotImportUpward(t *testing.T) {
	root := repoRoot(t)
	for _, pkg := range []string{"store", "store/memstore", "store/sqlitestore", "store/pgstore", "store/storetest"} {
		if _, err := os.Stat(filepath.Join(root, pkg)); err != nil {
			continue
		}
		for _, dep := range deps(t, root, pkg) {
			if dep == module || strings.HasPrefix(dep, module+"/httpapi") || strings.HasPrefix(dep, module+"/examples") {
				t.Errorf("%s imports %s, which sits above it", pkg, dep)
			}
			if pkg == "store" && strings.HasPrefix(dep, module+"/store/") {
				t.Errorf("store imports backend %s", dep)
			}
		}
	}
}

// TestDomainEdges checks the direct imports between domains: exactly the
// edges in domainEdges, and no others (in particular, credits never
// imports usage).
func TestDomainEdges(t *testing.T) {
	root := repoRoot(t)
	for _, d := range domains {
		if _, err := os.Stat(filepath.Join(root, d)); err != nil {
			continue
		}
		cmd := exec.Command(goTool(t), "list", "-f", `{{join .Imports "\n"}}`, "./"+d)
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", d, err, out)
		}
		for _, imp := range strings.Fields(string(out)) {
			for _, other := range domains {
				if other == d || imp != module+"/"+other {
					continue
				}
				allowedEdge := false
				for _, e := range domainEdges[d] {
					allowedEdge = allowedEdge || e == other
				}
				if !allowedEdge {
					t.Errorf("domain %s imports domain %s; the only allowed edges are %v", d, other, domainEdges)
				}
			}
		}
	}
}

// TestDashboardStaysALibrary checks that the dashboard, which hosts embed,
// depends on no example program, no storage backend and no test-only
// module: payment and invoicing reach it through its Options hooks.
func TestDashboardStaysALibrary(t *testing.T) {
	root := repoRoot(t)
	if _, err := os.Stat(filepath.Join(root, "dashboard")); err != nil {
		t.Skip("no dashboard package")
	}
	for _, dep := range deps(t, root, "dashboard") {
		// store/storeotel is no backend: the facade wraps its store with it
		// when the host passes telemetry providers.
		backend := strings.HasPrefix(dep, module+"/store/") && dep != module+"/store/storeotel"
		if strings.HasPrefix(dep, module+"/examples") || backend || strings.HasPrefix(dep, "github.com/chromedp/") {
			t.Errorf("dashboard depends on %s", dep)
		}
	}
}

// sqlEngine are the shared SQL engine packages: they hold the ledger and
// metering rules and row codecs of the SQL backends, and no driver.
var sqlEngine = []string{"internal/sqlledger", "internal/sqlaccount", "internal/sqlrow", "internal/sqlevents"}

// sqlEngineUsers are the only packages that may import the engine.
var sqlEngineUsers = []string{"store/sqlitestore", "store/pgstore"}

// sqlEngineInternal: the outbox of the SQL backends (internal/sqlevents)
// runs on sqlaccount's DB, so it may import sqlaccount too.
var sqlEngineInternal = map[string]string{"internal/sqlevents": module + "/internal/sqlaccount"}

// TestSQLEngineStaysDriverFree checks that the shared SQL engine imports no
// database driver and no store package (the backends import it, not the
// other way round), and that only the SQL backends import it.
func TestSQLEngineStaysDriverFree(t *testing.T) {
	root := repoRoot(t)
	for _, pkg := range sqlEngine {
		for _, dep := range deps(t, root, pkg) {
			if strings.HasPrefix(dep, "modernc.org/") || strings.HasPrefix(dep, "github.com/jackc/") ||
				strings.HasPrefix(dep, module+"/store") || dep == module || strings.HasPrefix(dep, module+"/httpapi") {
				t.Errorf("%s depends on %s; the SQL engine holds no driver and sits below the backends", pkg, dep)
			}
		}
	}
	cmd := exec.Command(goTool(t), "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, "./...")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		pkg := strings.TrimPrefix(f[0], module+"/")
		for _, imp := range f[1:] {
			if imp != module+"/internal/sqlledger" && imp != module+"/internal/sqlaccount" {
				continue
			}
			ok := sqlEngineInternal[pkg] == imp
			for _, u := range sqlEngineUsers {
				ok = ok || pkg == u
			}
			if !ok {
				t.Errorf("%s imports %s; only %v may", pkg, imp, sqlEngineUsers)
			}
		}
	}
}

// driverPkgs are the driver packages (Go CDK style): the ledger and metering
// engines that backends run inside their transactions. They sit beside their
// domain, import only what a domain may, and are imported only by backends
// (store/…) and the engines under internal/ — never by a host-facing package
// (the facade, httpapi, dashboard, the examples), which use the domains'
// services instead.
var driverPkgs = []string{"credits/ledger", "usage/meter"}

// driverUsers are the import path prefixes (below the module) that may
// import a driver package, besides the driver packages themselves.
var driverUsers = []string{"store/", "internal/"}

// TestDriverPackagesStayBelowHosts checks both rules: a driver package
// depends only on the standard library (no net/http, no database/sql), the
// modules a domain may use and the domains, and no package outside
// driverUsers imports one, not even in its tests.
func TestDriverPackagesStayBelowHosts(t *testing.T) {
	root := repoRoot(t)
	isDriver := func(pkg string) bool {
		for _, d := range driverPkgs {
			if pkg == d {
				return true
			}
		}
		return false
	}
	for _, pkg := range driverPkgs {
		for _, dep := range deps(t, root, pkg) {
			ok := isDriver(strings.TrimPrefix(dep, module+"/"))
			for _, a := range allowed {
				ok = ok || dep == strings.TrimSuffix(a, "/") || strings.HasPrefix(dep, a)
			}
			for _, d := range domains {
				ok = ok || dep == module+"/"+d
			}
			if !ok {
				t.Errorf("driver package %s depends on %s; it may import only what a domain may, and the domains", pkg, dep)
			}
		}
		cmd := exec.Command(goTool(t), "list", "-deps", "./"+pkg)
		cmd.Dir = root
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Fields(string(out)) {
			if l == "net/http" || l == "database/sql" {
				t.Errorf("driver package %s depends on %s", pkg, l)
			}
		}
	}
	cmd := exec.Command(goTool(t), "list", "-f",
		`{{.ImportPath}} {{join .Imports " "}} {{join .TestImports " "}} {{join .XTestImports " "}}`, "./...")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		pkg := strings.TrimPrefix(f[0], module+"/")
		if isDriver(pkg) {
			continue
		}
		user := false
		for _, u := range driverUsers {
			user = user || strings.HasPrefix(pkg, u)
		}
		for _, imp := range f[1:] {
			if !user && isDriver(strings.TrimPrefix(imp, module+"/")) {
				t.Errorf("%s imports the driver package %s; only packages under %v may (hosts use the services)", pkg, imp, driverUsers)
			}
		}
	}
}

// backendCapabilities are the methods a backend's exported type may show
// besides its constructor: Close and the capabilities it documents for
// hosts. The store operations stay behind store.Driver (DESIGN.md,
// "Backends").
var backendCapabilities = map[string]bool{"Close": true, "ProcessHolds": true, "LeasedHolds": true}

// TestBackendsExportNoStoreOperations checks, on what go doc shows of each
// backend, that no exported method other than Close and the documented
// capabilities is reachable on a backend's types: the store operations
// bypass the domain rules, so a host must not find them there.
func TestBackendsExportNoStoreOperations(t *testing.T) {
	root := repoRoot(t)
	for _, pkg := range []string{"store/memstore", "store/sqlitestore", "store/pgstore"} {
		cmd := exec.Command(goTool(t), "doc", "-all", "./"+pkg)
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go doc %s: %v\n%s", pkg, err, out)
		}
		methods := 0
		for _, l := range strings.Split(string(out), "\n") {
			if !strings.HasPrefix(l, "func (") {
				continue
			}
			methods++
			_, rest, _ := strings.Cut(l, ") ")
			name, _, _ := strings.Cut(rest, "(")
			if !backendCapabilities[name] {
				t.Errorf("%s exports the method %s; a backend shows only Close and its documented capabilities (%v)", pkg, strings.TrimSpace(l), backendCapabilities)
			}
		}
		if methods == 0 {
			t.Errorf("go doc %s lists no methods: the check parses nothing (Close at least is expected)", pkg)
		}
	}
}
