//go:build tools

// Package tools pins the OLM and operator-registry commands that
// hack/olm-cluster/build.sh builds (olm, catalog, cpb, opm). Nothing imports
// this package; it only keeps the modules in go.mod/go.sum.
package tools

import (
	_ "github.com/operator-framework/operator-lifecycle-manager/cmd/catalog"
	_ "github.com/operator-framework/operator-lifecycle-manager/cmd/olm"
	_ "github.com/operator-framework/operator-lifecycle-manager/util/cpb"
	_ "github.com/operator-framework/operator-registry/cmd/opm"
)
