package client

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"sync"
)

// LiveList is a live list (docs/protocol.md §6.2): the first page_size
// objects of a list query, kept as they are by the server's events, and
// the query's count when asked for with "with_count". Each event is
// applied as the protocol says (the object's pk removed from the list,
// then, unless a delete or a count, the object inserted at its index)
// before it is sent on C.
type LiveList struct {
	// C receives each event once it is applied; closed when the
	// connection ends or the list is closed. Events that find it full
	// are dropped from C (still applied) and counted (Client.Dropped).
	C <-chan Event
	// Seq is where the list started: the seq of the model's last change
	// its first window reflects.
	Seq int64

	c      chan Event
	client *Client
	stream string
	rid    string // the request_id's JSON

	mu      sync.Mutex
	started bool
	items   []json.RawMessage
	pks     []string
	count   int
	last    int64
}

// LiveList subscribes to the live list of query on stream: query holds
// a list request's parameters (filters, ordering, search, fields,
// page_size, with_count), without page or cursor. The objects' primary
// key is read from Options.PKField (keep it among "fields"). A refusal is
// returned as a *StatusError.
func (c *Client) LiveList(ctx context.Context, stream string, query map[string]any) (*LiveList, error) {
	if query == nil {
		query = map[string]any{}
	}
	ch := make(chan Event, c.opts.EventBuffer)
	rid := "l" + strconv.FormatUint(c.next.Add(1), 10)
	l := &LiveList{C: ch, c: ch, client: c, stream: stream, rid: strconv.Quote(rid)}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	c.live[l.rid] = l
	c.mu.Unlock()
	rep, err := c.Request(ctx, stream, Payload{Action: "subscribe", RequestID: rid, Data: map[string]any{"action": "list", "query": query}})
	if err == nil {
		err = rep.Err()
	}
	if err != nil {
		l.forget()
		return nil, err
	}
	var data struct {
		Seq int64 `json:"seq"`
	}
	_ = json.Unmarshal(rep.Data, &data)
	l.Seq = data.Seq
	return l, nil
}

// start installs the subscribe reply's window; c.mu is held.
func (l *LiveList) start(status *int, data json.RawMessage) {
	if *status != 200 {
		return
	}
	var d struct {
		Seq     int64             `json:"seq"`
		Count   int               `json:"count"`
		Results []json.RawMessage `json:"results"`
	}
	if json.Unmarshal(data, &d) != nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.started {
		return // the reply to the list's unsubscribe, which shares its request_id
	}
	l.started = true
	l.items = d.Results
	l.pks = make([]string, len(d.Results))
	for i, it := range d.Results {
		var obj map[string]json.RawMessage
		if json.Unmarshal(it, &obj) == nil {
			l.pks[i] = string(compact(obj[l.client.opts.PKField]))
		}
	}
	l.count, l.last = d.Count, d.Seq
}

// liveFor returns the live list an event frame is for; c.mu is not held.
func (c *Client) liveFor(stream string, p payload) *LiveList {
	switch p.Action {
	case "create", "update", "delete", "count":
	default:
		return nil
	}
	if len(p.RequestID) == 0 || string(p.RequestID) == "null" {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if l := c.live[string(compact(p.RequestID))]; l != nil && l.stream == stream {
		return l
	}
	return nil
}

// apply applies one event, then sends it on C.
func (l *LiveList) apply(ev *Event) {
	l.mu.Lock()
	pk := string(compact(ev.PK))
	if ev.Action != "count" {
		if i := slices.Index(l.pks, pk); i >= 0 {
			l.pks = slices.Delete(l.pks, i, i+1)
			l.items = slices.Delete(l.items, i, i+1)
		}
		if ev.Action != "delete" && ev.Index != nil {
			i := min(max(*ev.Index, 0), len(l.items))
			l.pks = slices.Insert(l.pks, i, pk)
			l.items = slices.Insert(l.items, i, ev.Data)
		}
	}
	if ev.Count != nil {
		l.count = *ev.Count
	}
	l.last = ev.Seq
	l.mu.Unlock()
	l.client.mu.Lock()
	defer l.client.mu.Unlock()
	if l.client.live[l.rid] == l {
		l.client.deliver(&Subscription{c: l.c}, ev)
	}
}

// Items returns the window's objects, in order, as last applied.
func (l *LiveList) Items() []json.RawMessage {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.items)
}

// PKs returns the window's primary keys (canonical JSON), in order.
func (l *LiveList) PKs() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.pks)
}

// Count returns the query's count as last told (with "with_count").
func (l *LiveList) Count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.count
}

// Last returns the seq of the last event applied (Seq before any).
func (l *LiveList) Last() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}

// Close unsubscribes the list; no event of it follows the reply. C is
// closed.
func (l *LiveList) Close(ctx context.Context) error {
	rep, err := l.client.Request(ctx, l.stream, Payload{Action: "unsubscribe", RequestID: json.RawMessage(l.rid), Data: map[string]any{"action": "list"}})
	if err == nil {
		err = rep.Err()
	}
	l.forget()
	return err
}

func (l *LiveList) forget() {
	c := l.client
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.live[l.rid] == l {
		delete(c.live, l.rid)
		close(l.c)
	}
}
