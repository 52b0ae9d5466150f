// Package archtest holds the test that guards keyledger's dependency
// direction (DESIGN.md, "Dependency direction"): domain packages import only
// the standard library, the design-card modules and keyledger/internal, and
// nothing below imports anything above, and only backends and internal
// engines import the driver packages (credits/ledger, usage/meter).
package archtest
