// Package client is a Go client for streamapi servers (and any server
// speaking the Channels API protocol): Dial, then Request with replies
// matched by request_id, and Subscribe with events delivered on channels.
//
//	c, err := client.Dial(ctx, "ws://127.0.0.1:8000/ws", nil)
//	rep, err := c.Request(ctx, "questions", client.Payload{Action: "create", Data: map[string]any{"question_text": "Why?"}})
//	sub, err := c.Subscribe(ctx, "questions", "update", nil)
//	ev := <-sub.C
//
// A Client is safe for concurrent use.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/coder/websocket"
)

// Options configures Dial. Nil is valid.
type Options struct {
	// HTTPHeader is sent with the handshake (e.g. Authorization).
	HTTPHeader http.Header
	// Subprotocols are offered in Sec-WebSocket-Protocol.
	Subprotocols []string
	// ReadLimit is the largest frame accepted; default 16 MiB.
	ReadLimit int64
	// EventBuffer is the capacity of each subscription's channel; default
	// 1024. Events that find it full are dropped and counted (Dropped).
	EventBuffer int
	// UnmatchedBuffer is the capacity of the Unmatched channel; default
	// 256. Frames that find it full are dropped and counted (Dropped).
	UnmatchedBuffer int
	// PKField is the field holding the primary key in the objects of
	// live lists (LiveList); default "id".
	PKField string
	// HTTPClient makes the handshake; nil uses http.DefaultClient. A
	// custom transport can choose the source address (the load tool
	// spreads connections over several 127.0.0.x addresses).
	HTTPClient *http.Client
}

// Client is one WebSocket connection to a server.
type Client struct {
	ws   *websocket.Conn
	opts Options

	mu      sync.Mutex
	pending map[string]chan *Reply
	subs    map[*Subscription]struct{}
	inst    map[string]*Subscription // by request_id
	live    map[string]*LiveList     // by request_id
	closed  bool

	next      atomic.Uint64
	dropped   atomic.Uint64
	unmatched chan []byte
	done      chan struct{}
	err       error // why the read loop ended; set before done closes
}

// Payload is a request's payload. Nil PK, Data and RequestID are omitted;
// a nil RequestID gets a fresh one.
type Payload struct {
	Action    string
	PK        any
	Data      any
	RequestID any
}

// Reply is a decoded reply frame.
type Reply struct {
	Stream    string          `json:"stream"`
	Action    string          `json:"action"`
	Data      json.RawMessage `json:"data"`
	Errors    json.RawMessage `json:"errors"`
	Status    int             `json:"response_status"`
	RequestID json.RawMessage `json:"request_id"`
	// Seq is the payload's seq, when the reply has one: where a DCRF
	// instance subscription starts.
	Seq int64 `json:"seq,omitempty"`
	// Raw is the whole frame as received.
	Raw []byte `json:"-"`
}

// Decode unmarshals the reply's data into v.
func (r *Reply) Decode(v any) error { return json.Unmarshal(r.Data, v) }

// Err returns a *StatusError unless the status is 2xx.
func (r *Reply) Err() error {
	if r.Status >= 200 && r.Status < 300 {
		return nil
	}
	return &StatusError{Status: r.Status, Errors: r.Errors}
}

// StatusError is a reply with a non-2xx response_status.
type StatusError struct {
	Status int
	Errors json.RawMessage
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("streamapi: status %d: %s", e.Status, e.Errors)
}

// Event is a change event.
type Event struct {
	Stream string
	Action string
	Data   json.RawMessage
	// Model and PK are set in Channels API events.
	Model string
	PK    json.RawMessage
	// RequestID is set in DCRF events: the subscribing request's id.
	RequestID json.RawMessage
	// Seq is the change's number among its model's changes, when the
	// server keeps a change log (0 otherwise): resume after the last one
	// seen with SubscribeSince.
	Seq int64
	// Index and Count are set in the events of live lists (LiveList):
	// the object's place in the window after the event (none for a
	// delete or a count), and the query's count when asked for.
	Index *int
	Count *int
	// Raw is the whole frame as received.
	Raw []byte
}

// Dial connects to the WebSocket at url.
func Dial(ctx context.Context, url string, opts *Options) (*Client, error) {
	c := &Client{
		pending:   make(map[string]chan *Reply),
		subs:      make(map[*Subscription]struct{}),
		inst:      make(map[string]*Subscription),
		live:      make(map[string]*LiveList),
		unmatched: make(chan []byte, unmatchedBuffer(opts)),
		done:      make(chan struct{}),
	}
	if opts != nil {
		c.opts = *opts
	}
	if c.opts.ReadLimit == 0 {
		c.opts.ReadLimit = 16 << 20
	}
	if c.opts.PKField == "" {
		c.opts.PKField = "id"
	}
	if c.opts.EventBuffer <= 0 {
		c.opts.EventBuffer = 1024
	}
	ws, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{
		HTTPHeader:   c.opts.HTTPHeader,
		Subprotocols: c.opts.Subprotocols,
		HTTPClient:   c.opts.HTTPClient,
	})
	if err != nil {
		return nil, fmt.Errorf("client: dial %s: %w", url, err)
	}
	ws.SetReadLimit(c.opts.ReadLimit)
	c.ws = ws
	go c.readLoop()
	return c, nil
}

// ErrClosed is returned for requests on a closed client.
var ErrClosed = errors.New("client: connection closed")

// Request sends a request on stream and waits for the reply with the same
// request_id. A reply with an error status is returned as a Reply, not an
// error; use Reply.Err. A ctx that ends while the frame is being written
// closes the connection (a torn frame cannot be taken back); one that ends
// while waiting for the reply only abandons the wait.
func (c *Client) Request(ctx context.Context, stream string, p Payload) (*Reply, error) {
	if p.RequestID == nil {
		p.RequestID = "r" + strconv.FormatUint(c.next.Add(1), 10)
	}
	rid, err := json.Marshal(p.RequestID)
	if err != nil {
		return nil, fmt.Errorf("client: request_id: %w", err)
	}
	frame, err := encodeRequest(stream, p, rid)
	if err != nil {
		return nil, err
	}
	// coder/websocket closes the connection when a write's context ends, so
	// a context that is already done must not reach Write.
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ch := make(chan *Reply, 1)
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	c.pending[string(rid)] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, string(rid))
		c.mu.Unlock()
	}()
	if err := c.ws.Write(ctx, websocket.MessageText, frame); err != nil {
		return nil, fmt.Errorf("client: send: %w", err)
	}
	select {
	case rep := <-ch:
		return rep, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.done:
		return nil, fmt.Errorf("%w: %v", ErrClosed, c.err)
	}
}

func encodeRequest(stream string, p Payload, rid json.RawMessage) ([]byte, error) {
	payload := map[string]any{"action": p.Action, "request_id": rid}
	if p.PK != nil {
		payload["pk"] = p.PK
	}
	if p.Data != nil {
		payload["data"] = p.Data
	}
	b, err := json.Marshal(map[string]any{"stream": stream, "payload": payload})
	if err != nil {
		return nil, fmt.Errorf("client: encode request: %w", err)
	}
	return b, nil
}

// SendRaw writes frame as is, e.g. to test a server's handling of bad
// input. Replies that match no request arrive on Unmatched.
func (c *Client) SendRaw(ctx context.Context, frame []byte) error {
	return c.ws.Write(ctx, websocket.MessageText, frame)
}

// Unmatched delivers frames that matched no pending request and no
// subscription (up to 256 are buffered; later ones are dropped).
func (c *Client) Unmatched() <-chan []byte { return c.unmatched }

// Dropped returns how many frames were dropped because a subscription's
// channel, or the Unmatched channel, was full.
func (c *Client) Dropped() uint64 { return c.dropped.Load() }

// Done is closed when the connection has ended.
func (c *Client) Done() <-chan struct{} { return c.done }

// CloseStatus returns the close code the server sent, or -1 when the
// connection is open or ended without a close frame.
func (c *Client) CloseStatus() websocket.StatusCode {
	select {
	case <-c.done:
		return websocket.CloseStatus(c.err)
	default:
		return -1
	}
}

// Err returns why the connection ended, nil while it is open.
func (c *Client) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// Close closes the connection normally and waits for the read loop to
// end. Closing a connection the server already closed is not an error.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	select {
	case <-c.done:
		return nil
	default:
	}
	err := c.ws.Close(websocket.StatusNormalClosure, "")
	<-c.done
	if websocket.CloseStatus(c.err) != -1 {
		return nil // the close handshake completed
	}
	return err
}

type frame struct {
	Stream  string          `json:"stream"`
	Payload json.RawMessage `json:"payload"`
}

type payload struct {
	Action    string          `json:"action"`
	Data      json.RawMessage `json:"data"`
	Errors    json.RawMessage `json:"errors"`
	Status    *int            `json:"response_status"`
	RequestID json.RawMessage `json:"request_id"`
	Model     *string         `json:"model"`
	PK        json.RawMessage `json:"pk"`
	Seq       int64           `json:"seq"`
	Index     *int            `json:"index"`
	Count     *int            `json:"count"`
}

func (c *Client) readLoop() {
	defer close(c.done)
	defer func() {
		c.mu.Lock()
		c.closed = true
		for s := range c.subs {
			close(s.c)
		}
		c.subs = nil
		for _, l := range c.live {
			close(l.c)
		}
		c.live = nil
		c.mu.Unlock()
	}()
	ctx := context.Background()
	for {
		_, b, err := c.ws.Read(ctx)
		if err != nil {
			c.err = err
			return
		}
		c.dispatch(b)
	}
}

func (c *Client) dispatch(b []byte) {
	var f frame
	var p payload
	if json.Unmarshal(b, &f) != nil || json.Unmarshal(f.Payload, &p) != nil {
		c.toUnmatched(b)
		return
	}
	if l := c.liveFor(f.Stream, p); l != nil {
		l.apply(&Event{Stream: f.Stream, Action: p.Action, Data: p.Data, PK: p.PK, RequestID: p.RequestID, Seq: p.Seq, Index: p.Index, Count: p.Count, Raw: b})
		return
	}
	if p.Model != nil && (len(p.RequestID) == 0 || string(p.RequestID) == "null") {
		ev := &Event{Stream: f.Stream, Action: p.Action, Data: p.Data, Model: *p.Model, PK: p.PK, Seq: p.Seq, Raw: b}
		c.mu.Lock()
		matched := false
		for s := range c.subs {
			if s.matches(ev) {
				matched = true
				c.deliver(s, ev)
			}
		}
		c.mu.Unlock()
		if !matched {
			c.toUnmatched(b)
		}
		return
	}
	rid := string(compact(p.RequestID))
	c.mu.Lock()
	ch := c.pending[rid]
	if ch != nil && p.Status != nil {
		delete(c.pending, rid)
		if l := c.live[rid]; l != nil && l.stream == f.Stream {
			// Before any event of the list, which may follow at once.
			l.start(p.Status, p.Data)
		}
		c.mu.Unlock()
		ch <- &Reply{Stream: f.Stream, Action: p.Action, Data: p.Data, Errors: p.Errors, Status: *p.Status, RequestID: p.RequestID, Seq: p.Seq, Raw: b}
		return
	}
	if s := c.inst[rid]; s != nil && s.stream == f.Stream && (p.Action == "update" || p.Action == "delete") {
		c.deliver(s, &Event{Stream: f.Stream, Action: p.Action, Data: p.Data, RequestID: p.RequestID, Seq: p.Seq, Raw: b})
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	c.toUnmatched(b)
}

// deliver sends ev to s without blocking; c.mu is held.
func (c *Client) deliver(s *Subscription, ev *Event) {
	select {
	case s.c <- *ev:
	default:
		c.dropped.Add(1)
	}
}

func (c *Client) toUnmatched(b []byte) {
	select {
	case c.unmatched <- b:
	default:
		c.dropped.Add(1)
	}
}

func unmatchedBuffer(opts *Options) int {
	if opts == nil || opts.UnmatchedBuffer <= 0 {
		return 256
	}
	return opts.UnmatchedBuffer
}

func compact(raw json.RawMessage) []byte {
	if len(raw) == 0 {
		return []byte("null")
	}
	var buf bytes.Buffer
	if json.Compact(&buf, raw) != nil {
		return raw
	}
	return buf.Bytes()
}
