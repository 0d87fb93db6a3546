// Package echo is the bare WebSocket server the load tool compares
// streamapi against: the same WebSocket library (gws), one read loop per
// connection, and for each request frame a reply of the same shape
// ({"stream", "payload": {"action", "data", "errors", "response_status",
// "request_id"}}), without touching any store. It is the physical limit of
// the transport on the machine, measured in the same run.
//
// For the fan-out baseline it also remembers which connections sent a
// subscribe (or subscribe_instance) frame, and answers a patch or update
// frame by first broadcasting one event frame ({"stream", "payload":
// {"action": "update", "model", "pk", "data"}}, data being the request's
// data with the pk as "id") to every subscribed connection, encoded once and
// queued with gws's Broadcaster, then replying: the order streamapi's
// in-process broker follows. It keeps no other state.
package echo

import (
	"encoding/json"
	"net/http"
	"sync"

	"github.com/lxzan/gws"
)

// Handler is the echo server's http.Handler.
type Handler struct {
	gws.BuiltinEventHandler
	up *gws.Upgrader

	mu   sync.Mutex
	subs map[*gws.Conn]struct{}
}

// New returns an echo server.
func New() *Handler {
	h := &Handler{subs: map[*gws.Conn]struct{}{}}
	h.up = gws.NewUpgrader(h, &gws.ServerOption{ReadMaxPayloadSize: 1 << 20, CheckUtf8Enabled: true})
	return h
}

// ServeHTTP upgrades and serves one connection.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, err := h.up.Upgrade(w, r)
	if err != nil {
		return
	}
	go c.ReadLoop()
}

type request struct {
	Stream  string `json:"stream"`
	Payload struct {
		Action    string          `json:"action"`
		PK        json.RawMessage `json:"pk"`
		Data      json.RawMessage `json:"data"`
		RequestID json.RawMessage `json:"request_id"`
	} `json:"payload"`
}

type event struct {
	Stream  string       `json:"stream"`
	Payload eventPayload `json:"payload"`
}

type eventPayload struct {
	Action string          `json:"action"`
	Model  string          `json:"model"`
	PK     json.RawMessage `json:"pk"`
	Data   map[string]any  `json:"data"`
}

type reply struct {
	Stream  string       `json:"stream"`
	Payload replyPayload `json:"payload"`
}

type replyPayload struct {
	Action         string          `json:"action"`
	Data           struct{}        `json:"data"`
	Errors         []any           `json:"errors"`
	ResponseStatus int             `json:"response_status"`
	RequestID      json.RawMessage `json:"request_id"`
}

// OnMessage answers a frame: the decode and encode streamapi also does,
// and nothing else.
func (h *Handler) OnMessage(c *gws.Conn, m *gws.Message) {
	defer m.Close()
	var req request
	if err := json.Unmarshal(m.Bytes(), &req); err != nil {
		return
	}
	rid := req.Payload.RequestID
	if len(rid) == 0 {
		rid = json.RawMessage("null")
	}
	switch req.Payload.Action {
	case "subscribe", "subscribe_instance":
		h.mu.Lock()
		h.subs[c] = struct{}{}
		h.mu.Unlock()
	case "patch", "update":
		h.broadcast(req.Stream, req.Payload.PK, req.Payload.Data)
	}
	b, _ := json.Marshal(reply{Stream: req.Stream, Payload: replyPayload{Action: req.Payload.Action, Errors: []any{}, ResponseStatus: 200, RequestID: rid}})
	_ = c.WriteMessage(gws.OpcodeText, b)
}

// broadcast queues one update event to every subscribed connection.
func (h *Handler) broadcast(stream string, pk, data json.RawMessage) {
	var d map[string]any
	if json.Unmarshal(data, &d) != nil || d == nil {
		d = map[string]any{}
	}
	if len(pk) == 0 {
		pk = json.RawMessage("null")
	}
	d["id"] = pk
	b, err := json.Marshal(event{Stream: stream, Payload: eventPayload{Action: "update", Model: stream, PK: pk, Data: d}})
	if err != nil {
		return
	}
	bc := gws.NewBroadcaster(gws.OpcodeText, b)
	defer bc.Close()
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.subs {
		_ = bc.Broadcast(c)
	}
}

// OnClose forgets a subscribed connection.
func (h *Handler) OnClose(c *gws.Conn, _ error) {
	h.mu.Lock()
	delete(h.subs, c)
	h.mu.Unlock()
}
