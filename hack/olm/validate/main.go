// Command validate runs operator-framework/api's own bundle validators (the ones `operator-sdk
// bundle validate` uses: CSV, CRD, bundle, plus OperatorHub and object checks) over a bundle
// directory (manifests/ + metadata/). Used only by test/e2e/install.test.ts.
//
// Output: one line per finding, "ERROR <kind>/<name>: <detail>" or "WARN ...", then a summary.
// Exit 1 when any error was found (warnings do not fail), 2 when the bundle cannot be loaded.
package main

import (
	"fmt"
	"os"

	"github.com/operator-framework/api/pkg/manifests"
	"github.com/operator-framework/api/pkg/validation"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: validate BUNDLE_DIR")
		os.Exit(2)
	}
	bundle, err := manifests.GetBundleFromDir(os.Args[1])
	if err != nil || bundle == nil {
		fmt.Fprintf(os.Stderr, "loading bundle %s: %v\n", os.Args[1], err)
		os.Exit(2)
	}
	validators := validation.DefaultBundleValidators.WithValidators(validation.OperatorHubValidator, validation.ObjectValidator)
	errs, warns := 0, 0
	for _, r := range validators.Validate(bundle.ObjectsToValidate()...) {
		for _, e := range r.Errors {
			errs++
			fmt.Printf("ERROR %s: %s\n", r.Name, e.Error())
		}
		for _, w := range r.Warnings {
			warns++
			fmt.Printf("WARN %s: %s\n", r.Name, w.Error())
		}
	}
	fmt.Printf("bundle %s (csv %s, %d CRDs): %d errors, %d warnings\n", os.Args[1], bundle.CSV.GetName(), len(bundle.V1CRDs)+len(bundle.V1beta1CRDs), errs, warns)
	if errs > 0 {
		os.Exit(1)
	}
}
