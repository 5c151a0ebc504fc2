package gateway

import (
	"net/http"
	"strconv"
	"strings"
)

// OpenAPI builds the OpenAPI 3.0 document of the routes: the same table
// the server's mux is built from, so the two cannot drift.
func OpenAPI() map[string]any {
	paths := map[string]any{}
	for _, rt := range routeTable() {
		op := map[string]any{"operationId": rt.OpID, "summary": rt.Summary}
		var params []any
		for _, name := range pathParams(rt.Path) {
			params = append(params, map[string]any{"name": name, "in": "path", "required": true, "schema": map[string]any{"type": "string"}})
		}
		for _, q := range rt.Query {
			schema := map[string]any{"type": "string"}
			switch q {
			case "limit", "max_attempts", "timeout_ms", "ttl_ms", "window_minutes":
				schema = integer()
			case "env", "required_capabilities", "required_labels":
				schema = strList()
			}
			p := map[string]any{"name": q, "in": "query", "required": false, "schema": schema}
			if rt.RawBody {
				p["description"] = "with an application/octet-stream body only"
			}
			params = append(params, p)
		}
		if len(params) > 0 {
			op["parameters"] = params
		}
		if rt.Body != "" {
			content := map[string]any{"application/json": map[string]any{"schema": ref(rt.Body)}}
			if rt.RawBody {
				content["application/octet-stream"] = map[string]any{"schema": map[string]any{"type": "string", "format": "binary"}}
			}
			op["requestBody"] = map[string]any{"required": rt.Body == "SubmitJob", "content": content}
		}
		ok := map[string]any{"description": http.StatusText(rt.Status)}
		switch {
		case rt.Stream:
			ok["description"] = "A Server-Sent Events stream: one `data:` line per change, the job as JSON (schema Job), ending after the terminal state"
			if rt.StreamDoc != "" {
				ok["description"] = rt.StreamDoc
			}
			ok["content"] = map[string]any{"text/event-stream": map[string]any{"schema": map[string]any{"type": "string"}}}
		case rt.TextResponse:
			ok["content"] = map[string]any{"text/plain": map[string]any{"schema": map[string]any{"type": "string"}}}
		case rt.RawResponse:
			ok["content"] = map[string]any{"application/octet-stream": map[string]any{"schema": map[string]any{"type": "string", "format": "binary"}}}
		case rt.Response != "":
			ok["content"] = map[string]any{"application/json": map[string]any{"schema": ref(rt.Response)}}
		default:
			ok["content"] = map[string]any{"application/json": map[string]any{"schema": map[string]any{"type": "object"}}}
		}
		responses := map[string]any{strconv.Itoa(rt.Status): ok}
		if rt.RawResponse {
			responses["204"] = map[string]any{"description": "The job completed without a result"}
		}
		for _, code := range rt.Errors {
			e := map[string]any{"description": http.StatusText(code), "content": map[string]any{
				"application/json": map[string]any{"schema": ref("Error")}}}
			if code == 429 || code == 503 {
				e["headers"] = map[string]any{"Retry-After": map[string]any{"schema": map[string]any{"type": "integer"}, "description": "seconds"}}
			}
			responses[strconv.Itoa(code)] = e
		}
		op["responses"] = responses
		if rt.Role != 0 {
			op["security"] = []any{map[string]any{"apiKey": []any{}}}
			op["description"] = "Needs a key of role " + rt.Role.String() + " or above."
		}
		item, _ := paths[rt.Path].(map[string]any)
		if item == nil {
			item = map[string]any{}
			paths[rt.Path] = item
		}
		item[strings.ToLower(rt.Method)] = op
	}
	return map[string]any{
		"openapi": "3.0.3",
		"info": map[string]any{"title": "CortexOS API", "version": "v1",
			"description": "The CortexOS HTTP gateway: submit, follow and inspect jobs (docs/api.md)."},
		"paths": paths,
		"components": map[string]any{
			"securitySchemes": map[string]any{"apiKey": map[string]any{"type": "http", "scheme": "bearer"}},
			"schemas":         schemas(),
		},
	}
}

func ref(name string) map[string]any { return map[string]any{"$ref": "#/components/schemas/" + name} }

func pathParams(path string) []string {
	var out []string
	for _, seg := range strings.Split(path, "/") {
		if strings.HasPrefix(seg, "{") && strings.HasSuffix(seg, "}") {
			out = append(out, seg[1:len(seg)-1])
		}
	}
	return out
}

func str() map[string]any     { return map[string]any{"type": "string"} }
func integer() map[string]any { return map[string]any{"type": "integer"} }
func boolean() map[string]any { return map[string]any{"type": "boolean"} }
func strMap() map[string]any {
	return map[string]any{"type": "object", "additionalProperties": str()}
}
func strList() map[string]any { return map[string]any{"type": "array", "items": str()} }
func object(props map[string]any, required ...string) map[string]any {
	o := map[string]any{"type": "object", "properties": props}
	if len(required) > 0 {
		o["required"] = required
	}
	return o
}

// schemas are the bodies' schemas; TestOpenAPISchemasMatchTypes holds them
// to the Go types' JSON fields.
func schemas() map[string]any {
	m := map[string]any{
		"SubmitJob": object(map[string]any{
			"topic": str(), "priority": map[string]any{"type": "string", "enum": []any{"BATCH", "INTERACTIVE", "CRITICAL"}},
			"tenant": str(), "job_id": str(), "env": strMap(), "max_attempts": integer(), "timeout_ms": integer(), "ttl_ms": integer(),
			"required_capabilities": strList(), "required_labels": strMap(), "input": str(),
			"input_base64": map[string]any{"type": "string", "format": "byte"},
		}, "topic"),
		"CancelJob": object(map[string]any{"reason": str()}),
		"Job": object(map[string]any{
			"job_id": str(), "state": str(), "attempts": integer(), "max_attempts": integer(), "failed_attempts": integer(),
			"worker_id": str(), "result_ptr": str(), "error": str(), "pending_reason": str(), "topic": str(), "priority": str(),
			"context_ptr": str(), "env": strMap(), "trace_id": str(), "created": str(), "updated": str(), "attempt_started": str(),
			"next_attempt": str(), "deadline": str(), "execution_ms": integer(), "dead_letter": boolean(), "tenant": str(),
			"pool": str(), "rule_id": str(), "policy_version": str(),
		}, "job_id", "state"),
		"JobList":    object(map[string]any{"jobs": map[string]any{"type": "array", "items": ref("Job")}, "next_page_token": str()}, "jobs"),
		"WorkerList": object(map[string]any{"workers": map[string]any{"type": "array", "items": map[string]any{"type": "object"}}}, "workers"),
		"PolicyDecision": object(map[string]any{
			"decision": str(), "rule_id": str(), "reason": str(), "policy_version": str(), "retry_after_ms": integer(),
		}, "decision"),
		"Policy": object(map[string]any{"version": str(), "default": str(), "rules": strList()}, "rules"),
		"Health": object(map[string]any{"status": str()}, "status"),
		"Error": object(map[string]any{"error": object(map[string]any{
			"code": str(), "message": str(), "field": str(),
		}, "code", "message")}, "error"),
	}
	for name, schema := range dashboardSchemas() {
		m[name] = schema
	}
	return m
}

func (s *Server) openapi(w http.ResponseWriter, r *http.Request, _ caller) {
	doc := s.openapiDoc
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(doc)
}
