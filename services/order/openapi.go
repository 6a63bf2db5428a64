// Package orderservice holds the order service's API contract; the service
// itself lives in the packages below (order, postgres, consume, sweep,
// httpapi).
package orderservice

import _ "embed"

// OpenAPI is openapi.yaml: the OpenAPI 3 description of the HTTP API, served
// at GET /openapi.yaml and checked against real responses in the tests.
//
//go:embed openapi.yaml
var OpenAPI []byte
