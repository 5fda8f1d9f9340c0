//go:build tools

// Package tools pins the command that ../build.sh compiles, so that
// `go mod tidy` keeps every module it needs in go.mod and go.sum.
// It is never compiled (build tag "tools").
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
)
