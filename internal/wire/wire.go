// Package wire encodes and decodes the JSON frames of the Channels API
// protocol and its DCRF dialect, and maps error codes to response_status.
// It is the only package that knows the frames' shape.
package wire

import (
	"bytes"
	"encoding/json"
	"errors"

	"github.com/streamapi/streamapi"
)

// statuses maps error codes to response_status: the one table for the
// WebSocket surface.
var statuses = map[string]int{
	streamapi.EINVALID:       400,
	streamapi.EUNKNOWNACTION: 400,
	streamapi.EGONE:          410,
	streamapi.EUNAUTHORIZED:  401,
	streamapi.EFORBIDDEN:     403,
	streamapi.ENOTFOUND:      404,
	streamapi.ECONFLICT:      409,
	streamapi.ETOOMANY:       429,
	streamapi.EINTERNAL:      500,
	streamapi.ETIMEOUT:       503,
}

// Status returns the response_status for err (200 for nil).
func Status(err error) int {
	if err == nil {
		return 200
	}
	if s, ok := statuses[streamapi.ErrorCode(err)]; ok {
		return s
	}
	return 500
}

// Errors returns the errors list for err: [{"field": [...]}] for validation
// errors, [message] for other *streamapi.Error values, and a generic message
// for anything else, whose text may hold internals.
func Errors(err error) []any {
	var e *streamapi.Error
	if !errors.As(err, &e) {
		return []any{"Internal server error."}
	}
	if d := e.FieldDetail(); d != nil {
		return []any{d}
	}
	return []any{e.Message}
}

// Request decoding errors.
var (
	errNotObject      = invalid("Invalid frame: expected a JSON object.")
	errNoStream       = invalid(`Invalid frame: "stream" is required.`)
	errStreamType     = invalid(`Invalid frame: "stream" must be a non-empty string.`)
	errNoPayload      = invalid(`Invalid frame: "payload" is required.`)
	errPayloadType    = invalid(`Invalid frame: "payload" must be a JSON object.`)
	errNoAction       = invalid(`Invalid frame: "payload.action" is required.`)
	errActionType     = invalid(`Invalid frame: "payload.action" must be a string.`)
	errRequestIDShape = invalid(`Invalid frame: "payload.request_id" must be a string, number or null.`)
)

func invalid(msg string) *streamapi.Error {
	return &streamapi.Error{Code: streamapi.EINVALID, Message: msg}
}

// DecodeRequest decodes a request frame. On error it still returns what it
// could read (stream, action, request_id), so the error reply can echo them.
func DecodeRequest(frame []byte) (streamapi.Request, error) {
	if req, ok := decodeFast(frame); ok {
		return req, nil
	}
	return decodeExact(frame)
}

// fastFrame is a request frame decoded in one pass into a struct.
type fastFrame struct {
	Stream  *string `json:"stream"`
	Payload struct {
		Action    *string         `json:"action"`
		PK        json.RawMessage `json:"pk"`
		Data      json.RawMessage `json:"data"`
		RequestID json.RawMessage `json:"request_id"`
	} `json:"payload"`
}

// The two non-ASCII runes whose case folding reaches an ASCII letter (a
// test checks every rune), in UTF-8.
var (
	kelvin = []byte("\u212a")
	longS  = []byte("\u017f")
)

// frameKeys are the names decodeFast matches.
var frameKeys = [...]string{"stream", "payload", "action", "pk", "data", "request_id"}

// decodeFast decodes a well-formed frame in one pass, and reports false
// whenever its result could differ from decodeExact's, which then decides:
// on any error, and for frames where encoding/json's struct matching
// (case-insensitive, last duplicate wins) could pick another value than the
// exact map lookup. That is, frames with a backslash (an escaped key could
// hide a case variant), or with one of the keys above written more than
// once or in another case anywhere in the frame, and frames holding K or ſ.
// A CPU profile put the
// two-pass map decode at 12% of a retrieve-heavy server.
func decodeFast(frame []byte) (streamapi.Request, bool) {
	var req streamapi.Request
	if bytes.IndexByte(frame, '\\') >= 0 || bytes.Contains(frame, kelvin) || bytes.Contains(frame, longS) {
		return req, false
	}
	if !keysOnceExact(frame) {
		return req, false
	}
	var f fastFrame
	if json.Unmarshal(frame, &f) != nil || f.Stream == nil || *f.Stream == "" || f.Payload.Action == nil {
		return req, false
	}
	if rid := f.Payload.RequestID; len(rid) > 0 && !isNull(rid) {
		switch rid[0] {
		case '"', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
			req.RequestID = rid
		default:
			return req, false
		}
	}
	req.Stream, req.Action = *f.Stream, *f.Payload.Action
	if pk := f.Payload.PK; len(pk) > 0 && !isNull(pk) {
		req.PK = pk
	}
	if data := f.Payload.Data; len(data) > 0 && !isNull(data) {
		req.Data = data
	}
	return req, true
}

// keysOnceExact reports whether each of frameKeys appears, quoted, at most
// once in the frame ignoring ASCII case, and then exactly as written. It
// tries every '"' as an opening quote, so it may count a closing quote or a
// string value too: that only sends more frames to the exact decode.
func keysOnceExact(frame []byte) bool {
	var seen [len(frameKeys)]bool
	for i := 0; ; {
		j := bytes.IndexByte(frame[i:], '"')
		if j < 0 {
			return true
		}
		i += j + 1
		for k, key := range frameKeys {
			end := i + len(key)
			if end < len(frame) && frame[end] == '"' && asciiFoldEqual(frame[i:end], key) {
				if seen[k] || string(frame[i:end]) != key {
					return false
				}
				seen[k] = true
			}
		}
	}
}

// asciiFoldEqual reports whether b equals key (ASCII lower case) ignoring
// ASCII case. encoding/json's matching also folds two non-ASCII runes onto
// ASCII letters, the Kelvin sign K onto k and the long s ſ onto s:
// decodeFast turns away frames holding either.
func asciiFoldEqual(b []byte, key string) bool {
	for i := range b {
		c := b[i]
		if c >= 0x80 {
			return false
		}
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != key[i] {
			return false
		}
	}
	return true
}

// decodeExact decodes a frame with exact, case-sensitive key lookups (the
// last of duplicate keys wins), telling missing keys from null ones.
func decodeExact(frame []byte) (streamapi.Request, error) {
	var req streamapi.Request
	var top map[string]json.RawMessage
	if err := json.Unmarshal(frame, &top); err != nil || top == nil {
		return req, errNotObject
	}
	rawStream, ok := top["stream"]
	if !ok {
		return req, errNoStream
	}
	if err := json.Unmarshal(rawStream, &req.Stream); err != nil || req.Stream == "" || isNull(rawStream) {
		req.Stream = ""
		return req, errStreamType
	}
	rawPayload, ok := top["payload"]
	if !ok {
		return req, errNoPayload
	}
	var p map[string]json.RawMessage
	if err := json.Unmarshal(rawPayload, &p); err != nil || p == nil {
		return req, errPayloadType
	}
	if rid, ok := p["request_id"]; ok && !isNull(rid) {
		switch rid[0] {
		case '"', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
			req.RequestID = rid
		default:
			return req, errRequestIDShape
		}
	}
	rawAction, ok := p["action"]
	if !ok || isNull(rawAction) {
		return req, errNoAction
	}
	if err := json.Unmarshal(rawAction, &req.Action); err != nil {
		return req, errActionType
	}
	if pk, ok := p["pk"]; ok && !isNull(pk) {
		req.PK = pk
	}
	if data, ok := p["data"]; ok && !isNull(data) {
		req.Data = data
	}
	return req, nil
}

func isNull(raw json.RawMessage) bool { return bytes.Equal(raw, []byte("null")) }

type replyFrame struct {
	Stream  *string      `json:"stream"`
	Payload replyPayload `json:"payload"`
}

type replyPayload struct {
	Action         *string         `json:"action"`
	Data           any             `json:"data"`
	Errors         []any           `json:"errors"`
	ResponseStatus int             `json:"response_status"`
	Seq            int64           `json:"seq,omitempty"`
	RequestID      json.RawMessage `json:"request_id"`
}

// EncodeReply encodes the reply to req (whose Stream and Action may be
// empty for a frame that could not be decoded: they are sent as null).
func EncodeReply(req *streamapi.Request, rep streamapi.Reply) ([]byte, error) {
	f := replyFrame{Payload: replyPayload{Errors: []any{}, RequestID: req.RequestID}}
	if req.Stream != "" {
		f.Stream = &req.Stream
	}
	if req.Action != "" {
		f.Payload.Action = &req.Action
	}
	if rep.Err != nil {
		f.Payload.ResponseStatus = Status(rep.Err)
		f.Payload.Errors = Errors(rep.Err)
	} else {
		f.Payload.ResponseStatus = rep.Status
		if f.Payload.ResponseStatus == 0 {
			f.Payload.ResponseStatus = 200
		}
		f.Payload.Data = rep.Data
		f.Payload.Seq = rep.Seq
	}
	b, err := json.Marshal(f)
	if err != nil && rep.Err == nil {
		// The data could not be encoded: answer with an internal error
		// rather than nothing.
		return EncodeReply(req, streamapi.Reply{Err: err})
	}
	return b, err
}

type eventFrame struct {
	Stream  string       `json:"stream"`
	Payload eventPayload `json:"payload"`
}

type eventPayload struct {
	Action string          `json:"action"`
	Data   json.RawMessage `json:"data"`
	Model  string          `json:"model"`
	PK     json.RawMessage `json:"pk"`
	Seq    int64           `json:"seq,omitempty"`
}

// EncodeEvent encodes the Channels API event for c on stream:
// {"stream", "payload": {"action", "data", "model", "pk"}}.
func EncodeEvent(stream string, c *streamapi.Change) (streamapi.Frame, error) {
	b, err := json.Marshal(eventFrame{Stream: stream, Payload: eventPayload{
		Action: c.Action, Data: c.Data, Model: c.Model, PK: c.PK, Seq: c.Seq,
	}})
	return streamapi.Frame{Head: b}, err
}

type instanceFrame struct {
	Stream  string          `json:"stream"`
	Payload instancePayload `json:"payload"`
}

type instancePayload struct {
	Action         string          `json:"action"`
	Data           json.RawMessage `json:"data"`
	Errors         []any           `json:"errors"`
	ResponseStatus int             `json:"response_status"`
	Seq            int64           `json:"seq,omitempty"`
}

var instanceTail = []byte("}}")

// EncodeInstanceEvent encodes the DCRF event for c on stream, leaving the
// request_id out: the returned frame's Head and Tail go around each
// subscription's request_id (Frame.Mid). A delete carries {"pk": PK}.
func EncodeInstanceEvent(stream string, c *streamapi.Change) (streamapi.Frame, error) {
	data := c.Data
	if c.Action == streamapi.ChangeDelete {
		data = append(append([]byte(`{"pk":`), c.PK...), '}')
	}
	b, err := json.Marshal(instanceFrame{Stream: stream, Payload: instancePayload{
		Action: c.Action, Data: data, Errors: []any{}, ResponseStatus: 200, Seq: c.Seq,
	}})
	if err != nil {
		return streamapi.Frame{}, err
	}
	head := append(b[:len(b)-len(instanceTail)], `,"request_id":`...)
	return streamapi.Frame{Head: head, Tail: instanceTail}, nil
}

// LiveCount is the action of a live list's event that tells a new count
// alone.
const LiveCount = "count"

// LiveEvent is one event of a live list (docs/protocol.md §6.2), to
// encode: Event.Action is create, update, delete or LiveCount (data and
// pk null); Count is set when the client asked for it.
type LiveEvent struct {
	Stream, Model string
	Seq           int64
	RequestID     json.RawMessage
	DCRF          bool
	Event         streamapi.LiveEvent
	Count         *int
}

type livePayload struct {
	Action    string          `json:"action"`
	Data      json.RawMessage `json:"data"`
	Model     string          `json:"model"`
	PK        json.RawMessage `json:"pk"`
	Seq       int64           `json:"seq,omitempty"`
	RequestID json.RawMessage `json:"request_id"`
	Index     *int            `json:"index,omitempty"`
	Count     *int            `json:"count,omitempty"`
}

type liveDCRFPayload struct {
	Action         string          `json:"action"`
	Data           json.RawMessage `json:"data"`
	PK             json.RawMessage `json:"pk"`
	Errors         []any           `json:"errors"`
	ResponseStatus int             `json:"response_status"`
	Seq            int64           `json:"seq,omitempty"`
	RequestID      json.RawMessage `json:"request_id"`
	Index          *int            `json:"index,omitempty"`
	Count          *int            `json:"count,omitempty"`
}

// EncodeLiveEvent encodes a live list's event: in the Channels API form
// {"action", "data", "model", "pk", "seq", "request_id", "index",
// "count"}; in the DCRF form the reply shape of instance events, with
// "pk", "index" and "count". A delete and a count have no index.
func EncodeLiveEvent(e *LiveEvent) (streamapi.Frame, error) {
	data, pk := e.Event.Data, e.Event.PK
	var index *int
	switch e.Event.Action {
	case LiveCount:
		data, pk = nil, nil
	case streamapi.ChangeDelete:
	default:
		i := e.Event.Index
		index = &i
	}
	if data == nil {
		data = json.RawMessage("null")
	}
	if pk == nil {
		pk = json.RawMessage("null")
	}
	rid := e.RequestID
	if len(rid) == 0 {
		rid = json.RawMessage("null")
	}
	var payload any = livePayload{Action: e.Event.Action, Data: data, Model: e.Model, PK: pk, Seq: e.Seq, RequestID: rid, Index: index, Count: e.Count}
	if e.DCRF {
		payload = liveDCRFPayload{Action: e.Event.Action, Data: data, PK: pk, Errors: []any{}, ResponseStatus: 200, Seq: e.Seq, RequestID: rid, Index: index, Count: e.Count}
	}
	b, err := json.Marshal(struct {
		Stream  string `json:"stream"`
		Payload any    `json:"payload"`
	}{e.Stream, payload})
	return streamapi.Frame{Head: b}, err
}
