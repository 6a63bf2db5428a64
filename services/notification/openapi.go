// Package notificationservice holds the notification service's API contract;
// the service itself lives in the packages below (status, postgres,
// consume, live, httpapi, web).
package notificationservice

import _ "embed"

// OpenAPI is openapi.yaml: the OpenAPI 3 description of the HTTP API, served
// at GET /openapi.yaml and checked against real responses in the tests.
//
//go:embed openapi.yaml
var OpenAPI []byte
