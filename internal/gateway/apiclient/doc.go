// Package apiclient is a Go client of the HTTP API, generated from the
// gateway's OpenAPI document (openapi.json here, what GET /openapi.json
// serves) by oapi-codegen v2.8.2. It shows that a client generated from
// the document works; TestGeneratedClient (internal/gateway) drives a real
// gateway with it. docs/api.md.
//
// To regenerate after a route changes (the first line rewrites
// openapi.json; TestOpenAPIFileFresh fails until it is done):
//
//	go generate ./internal/gateway/apiclient
package apiclient

//go:generate env CORTEX_WRITE_OPENAPI=1 go test -count=1 -run TestOpenAPIFileFresh ..
//go:generate go run github.com/oapi-codegen/oapi-codegen/v2/cmd/oapi-codegen@v2.8.2 -generate types,client -package apiclient -o client.gen.go openapi.json
