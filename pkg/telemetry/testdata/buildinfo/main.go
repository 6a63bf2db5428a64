// Command buildinfo prints the version telemetry.ReadBuild finds, for
// TestLinkerVersion to build with -ldflags -X.
package main

import (
	"fmt"

	"github.com/orderly/orderly/pkg/telemetry"
)

func main() { fmt.Println(telemetry.ReadBuild().Version) }
