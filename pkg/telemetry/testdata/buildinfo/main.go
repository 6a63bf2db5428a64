// Command buildinfo prints the version and revision telemetry.ReadBuild finds, for
// TestLinkerVersion to build with -ldflags -X.
package main

import (
	"fmt"

	"github.com/orderly/orderly/pkg/telemetry"
)

func main() {
	b := telemetry.ReadBuild()
	fmt.Println(b.Version, b.Revision)
}
