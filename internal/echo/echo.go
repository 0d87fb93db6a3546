// Package echo is the bare WebSocket server the load tool compares
// streamapi against: the same WebSocket library (gws), one read loop per
// connection, and for each request frame a reply of the same shape
// ({"stream", "payload": {"action", "data", "errors", "response_status",
// "request_id"}}), without touching any store. It is the physical limit of
// the transport on the machine, measured in the same run.
package echo

import (
	"encoding/json"
	"net/http"

	"github.com/lxzan/gws"
)

// Handler is the echo server's http.Handler.
type Handler struct {
	gws.BuiltinEventHandler
	up *gws.Upgrader
}

// New returns an echo server.
func New() *Handler {
	h := &Handler{}
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
		RequestID json.RawMessage `json:"request_id"`
	} `json:"payload"`
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
	b, _ := json.Marshal(reply{Stream: req.Stream, Payload: replyPayload{Action: req.Payload.Action, Errors: []any{}, ResponseStatus: 200, RequestID: rid}})
	_ = c.WriteMessage(gws.OpcodeText, b)
}
