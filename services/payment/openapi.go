// Package payment holds the payment service's API contract; the service
// itself lives in the packages below (payment, gateway, postgres, httpapi,
// consume).
package payment

import _ "embed"

// OpenAPI is openapi.yaml: the OpenAPI 3 description of the HTTP API, served
// at GET /openapi.yaml and checked against real responses in the tests.
//
//go:embed openapi.yaml
var OpenAPI []byte
