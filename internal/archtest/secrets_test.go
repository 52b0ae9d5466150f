package archtest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// secretName matches identifiers that hold secrets or values derived from
// them that an attacker could learn byte by byte from comparison timing.
var secretName = regexp.MustCompile(`(?i)(secret|signature|password|passwd|token|mac|rawkey)s?$`)

// TestSecretsAreNotComparedWithEquals walks every non-test Go file and
// fails on == or != between two operands of which one is named like a
// secret (signature, password, token, MAC, secret) and the other is not
// a constant such as "" or nil: secrets are compared with crypto/subtle or
// hmac.Equal, or looked up by their SHA-256 (API keys, session tokens).
func TestSecretsAreNotComparedWithEquals(t *testing.T) {
	root := repoRoot(t)
	fset := token.NewFileSet()
	var checked int
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); n != "." && (strings.HasPrefix(n, ".") || n == "testdata" || n == "vendor") && path != root {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		checked++
		ast.Inspect(f, func(n ast.Node) bool {
			be, ok := n.(*ast.BinaryExpr)
			if !ok || (be.Op != token.EQL && be.Op != token.NEQ) {
				return true
			}
			if isConst(be.X) || isConst(be.Y) {
				return true
			}
			for _, side := range []ast.Expr{be.X, be.Y} {
				if name := exprName(side); secretName.MatchString(name) {
					rel, _ := filepath.Rel(root, fset.Position(be.Pos()).Filename)
					t.Errorf("%s:%d: %s compared with %s; use crypto/subtle or hmac.Equal (or look it up by hash)",
						rel, fset.Position(be.Pos()).Line, name, be.Op)
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 50 {
		t.Fatalf("only %d files checked", checked)
	}
}

// exprName is the last name of an identifier, selector or call (x.y.z →
// "z", f(x) → "f"), "" for anything else.
func exprName(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name
	case *ast.SelectorExpr:
		return e.Sel.Name
	case *ast.CallExpr:
		return exprName(e.Fun)
	case *ast.IndexExpr:
		return exprName(e.X)
	case *ast.ParenExpr:
		return exprName(e.X)
	}
	return ""
}

// isConst reports a literal, nil, or a constant-looking name (true, false).
func isConst(e ast.Expr) bool {
	switch e := e.(type) {
	case *ast.BasicLit:
		return true
	case *ast.Ident:
		return e.Name == "nil" || e.Name == "true" || e.Name == "false"
	case *ast.CallExpr: // len(x) == n and the like compare lengths, which are public
		return exprName(e.Fun) == "len"
	}
	return false
}
