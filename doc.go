// Package streamapi exposes a RESTful streaming API over WebSockets: the Go
// counterpart of the Python project Channels API.
//
// Declare a resource once with package resource (a Go struct, its store,
// validation, permissions and custom actions), hand it to package server, and
// mount the server's handler on your own mux. Clients then speak the Channels
// API wire protocol (and the djangochannelsrestframework "DCRF" dialect) over
// one multiplexed WebSocket:
//
//	{"stream": "questions", "payload": {"action": "create", "data": {...}, "request_id": 1}}
//
// and receive replies and change events:
//
//	{"stream": "questions", "payload": {"action": "create", "data": {...}, "errors": [], "response_status": 201, "request_id": 1}}
//
// This root package holds the vocabulary shared by every layer: requests and
// replies, errors and their codes, changes, users and permissions, and the
// interfaces that stores and brokers implement. It imports only the standard
// library.
//
// # Where to start
//
// See package resource for declaring resources, package server for mounting
// them, package client for a Go client, and examples/polls for a complete
// application. docs/protocol.md describes every frame on the wire.
//
// # Concurrency
//
// Every exported type in this package is safe for concurrent use unless its
// documentation says otherwise.
package streamapi
