// Package inventory holds the inventory service's API contract; the service
// itself lives in the packages below (stock, postgres, httpapi, consume).
package inventory

import _ "embed"

// OpenAPI is openapi.yaml: the OpenAPI 3 description of the HTTP API, served
// at GET /openapi.yaml and checked against real responses in the tests.
//
//go:embed openapi.yaml
var OpenAPI []byte
