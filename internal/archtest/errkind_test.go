package archtest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// libraryDir reports whether dir (relative to the module root, slash
// separated) holds a library package: anything but the examples, the
// internal helpers and test data.
func libraryDir(dir string) bool {
	for _, skip := range []string{"examples", "internal", "testdata", "scripts", ".git", ".ci"} {
		if dir == skip || strings.HasPrefix(dir, skip+"/") || strings.Contains(dir, "/"+skip+"/") || strings.HasSuffix(dir, "/"+skip) {
			return false
		}
	}
	return true
}

// libraryFiles parses the non-test Go files of every library package.
func libraryFiles(t *testing.T) map[string]*ast.File {
	t.Helper()
	root := repoRoot(t)
	fset := token.NewFileSet()
	files := map[string]*ast.File{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel != "." && !libraryDir(rel) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		files[rel] = f
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 20 {
		t.Fatalf("found only %d library files under %s", len(files), root)
	}
	return files
}

// importName is the name under which f imports path ("" if it does not).
func importName(f *ast.File, path string) string {
	for _, im := range f.Imports {
		p, _ := strconv.Unquote(im.Path.Value)
		if p != path {
			continue
		}
		if im.Name != nil {
			return im.Name.Name
		}
		return path[strings.LastIndex(path, "/")+1:]
	}
	return ""
}

// TestEverySentinelHasAKind finds every exported package-level Err*
// variable of the library packages in their source, so that a new one is
// checked without a list to update, and fails unless it is made by
// errkind.New with a kind other than Unknown (or is another package's
// sentinel, checked where it is declared). Envelopes and the facade's retry
// rules classify by kind; a sentinel without one would be a 500 and a
// retried "store failure".
func TestEverySentinelHasAKind(t *testing.T) {
	n := 0
	for path, f := range libraryFiles(t) {
		ek := importName(f, module+"/errkind")
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.VAR {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, name := range vs.Names {
					if !name.IsExported() || !strings.HasPrefix(name.Name, "Err") {
						continue
					}
					n++
					if i >= len(vs.Values) {
						t.Errorf("%s: %s has no initializer: make it with errkind.New", path, name.Name)
						continue
					}
					if msg := kindedValue(vs.Values[i], ek); msg != "" {
						t.Errorf("%s: %s %s", path, name.Name, msg)
					}
				}
			}
		}
	}
	if n < 50 {
		t.Fatalf("found only %d sentinels: is the walk broken?", n)
	}
}

// kindedValue explains why v is not a kinded sentinel ("" if it is).
func kindedValue(v ast.Expr, ek string) string {
	switch v := v.(type) {
	case *ast.CallExpr:
		fn, ok := v.Fun.(*ast.SelectorExpr)
		if !ok || ek == "" || !isIdent(fn.X, ek) || fn.Sel.Name != "New" || len(v.Args) != 2 {
			return "is not made by errkind.New(kind, message)"
		}
		k, ok := v.Args[0].(*ast.SelectorExpr)
		if !ok || !isIdent(k.X, ek) || k.Sel.Name == "Unknown" {
			return "must name its kind as an errkind constant other than Unknown"
		}
		return ""
	case *ast.SelectorExpr:
		if strings.HasPrefix(v.Sel.Name, "Err") {
			return "" // another package's sentinel, checked there
		}
	}
	return "is not made by errkind.New(kind, message)"
}

func isIdent(e ast.Expr, name string) bool {
	id, ok := e.(*ast.Ident)
	return ok && id.Name == name
}

// TestEveryErrorTypeHasAKind fails for an exported type of a library
// package that implements error (has an Error method) without a Kind
// method: errkind.Of must see through typed errors like *credits.DebtError
// as it does through sentinels.
func TestEveryErrorTypeHasAKind(t *testing.T) {
	methods := map[string]map[string]bool{} // "dir.Type" → method names
	for path, f := range libraryFiles(t) {
		dir := filepath.ToSlash(filepath.Dir(path))
		for _, decl := range f.Decls {
			fd, ok := decl.(*ast.FuncDecl)
			if !ok || fd.Recv == nil || len(fd.Recv.List) != 1 {
				continue
			}
			typ := fd.Recv.List[0].Type
			if st, ok := typ.(*ast.StarExpr); ok {
				typ = st.X
			}
			id, ok := typ.(*ast.Ident)
			if !ok || !id.IsExported() {
				continue
			}
			key := dir + "." + id.Name
			if methods[key] == nil {
				methods[key] = map[string]bool{}
			}
			methods[key][fd.Name.Name] = true
		}
	}
	n := 0
	for typ, ms := range methods {
		if !ms["Error"] {
			continue
		}
		n++
		if !ms["Kind"] {
			t.Errorf("%s implements error without a Kind() errkind.Kind method", typ)
		}
	}
	if n < 4 {
		t.Fatalf("found only %d error types: is the walk broken?", n)
	}
}

// TestErrkindIsALeaf checks that errkind imports nothing but the standard
// library, so that every package, the domains included, may import it.
func TestErrkindIsALeaf(t *testing.T) {
	root := repoRoot(t)
	if ds := deps(t, root, "errkind"); len(ds) != 0 {
		t.Errorf("errkind depends on %v; it must import only the standard library", ds)
	}
}
