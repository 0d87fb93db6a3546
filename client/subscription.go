package client

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
)

// Subscription receives the events of one subscription on C, which is
// closed when the connection ends.
type Subscription struct {
	// C delivers the events.
	C <-chan Event
	// Seq is where the subscription starts, when the server keeps a
	// change log: the seq of the last change before its first event. A
	// client that has seen no event resumes after it.
	Seq int64

	c        chan Event
	client   *Client
	stream   string
	action   string // Channels API: create, update or delete
	pk       any
	pkKey    string // canonical JSON of pk; "" for any
	pkAlt    string // the same key in the other form the server may send: 7 for "7", "7" for 7
	instance bool
	rid      string
}

func (s *Subscription) matches(ev *Event) bool {
	if s.instance || ev.Stream != s.stream || ev.Action != s.action {
		return false
	}
	if s.pkKey == "" {
		return true
	}
	got := string(compact(ev.PK))
	return got == s.pkKey || got == s.pkAlt
}

// altKey returns the other JSON form of an integer key: the server
// normalises pks to the resource's key type, so "7" comes back as 7 on an
// integer key, and 7 as "7" on a string key.
func altKey(key string) string {
	if n, err := strconv.ParseInt(key, 10, 64); err == nil {
		return strconv.Quote(strconv.FormatInt(n, 10))
	}
	if s, err := strconv.Unquote(key); err == nil {
		if n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64); err == nil {
			return strconv.FormatInt(n, 10)
		}
	}
	return ""
}

// Subscribe sends a Channels API subscribe for action ("create", "update"
// or "delete") on stream, for one object when pk is not nil, and returns
// the subscription once the server has accepted it. A refusal is returned
// as a *StatusError.
func (c *Client) Subscribe(ctx context.Context, stream, action string, pk any) (*Subscription, error) {
	return c.subscribe(ctx, stream, action, pk, -1)
}

// SubscribeSince is Subscribe resuming after the change numbered since
// (an Event's Seq, or a Subscription's): the server first sends, in order,
// every matching event after it that this client missed, then live ones,
// with none missing or repeated between the two. When the server no longer
// holds what followed since, it refuses with a *StatusError of status 410
// (errors ["resync required"]): reload, then subscribe afresh.
func (c *Client) SubscribeSince(ctx context.Context, stream, action string, pk any, since int64) (*Subscription, error) {
	return c.subscribe(ctx, stream, action, pk, since)
}

func (c *Client) subscribe(ctx context.Context, stream, action string, pk any, since int64) (*Subscription, error) {
	s := c.newSub(stream)
	s.action, s.pk = action, pk
	data := map[string]any{"action": action}
	if pk != nil {
		b, err := json.Marshal(pk)
		if err != nil {
			return nil, err
		}
		s.pkKey = string(compact(b))
		s.pkAlt = altKey(s.pkKey)
		data["pk"] = pk
	}
	if since >= 0 {
		data["since"] = since
	}
	return c.open(ctx, s, Payload{Action: "subscribe", Data: data})
}

// SubscribeInstance sends a DCRF subscribe_instance for the object pk of
// stream; its update and delete events arrive on the subscription.
func (c *Client) SubscribeInstance(ctx context.Context, stream string, pk any) (*Subscription, error) {
	return c.subscribeInstance(ctx, stream, pk, -1)
}

// SubscribeInstanceSince is SubscribeInstance resuming after the change
// numbered since, as SubscribeSince does.
func (c *Client) SubscribeInstanceSince(ctx context.Context, stream string, pk any, since int64) (*Subscription, error) {
	return c.subscribeInstance(ctx, stream, pk, since)
}

func (c *Client) subscribeInstance(ctx context.Context, stream string, pk any, since int64) (*Subscription, error) {
	s := c.newSub(stream)
	s.pk, s.instance = pk, true
	rid := "i" + strconv.FormatUint(c.next.Add(1), 10)
	s.rid = strconv.Quote(rid) // the request_id's JSON: a plain ASCII string
	p := Payload{Action: "subscribe_instance", PK: pk, RequestID: rid}
	if since >= 0 {
		p.Data = map[string]any{"since": since}
	}
	return c.open(ctx, s, p)
}

// open registers s, then sends the subscribing request p: an event may
// follow its reply at once. A refusal unregisters s.
func (c *Client) open(ctx context.Context, s *Subscription, p Payload) (*Subscription, error) {
	c.mu.Lock()
	c.subs[s] = struct{}{}
	if s.instance {
		c.inst[s.rid] = s
	}
	c.mu.Unlock()
	rep, err := c.Request(ctx, s.stream, p)
	if err == nil {
		err = rep.Err()
	}
	if err != nil {
		c.forget(s)
		return nil, err
	}
	var data struct {
		Seq int64 `json:"seq"`
	}
	if json.Unmarshal(rep.Data, &data) == nil {
		s.Seq = data.Seq
	}
	if s.instance {
		s.Seq = rep.Seq // DCRF's reply has data null, its seq beside it
	}
	return s, nil
}

func (c *Client) newSub(stream string) *Subscription {
	ch := make(chan Event, c.opts.EventBuffer)
	return &Subscription{C: ch, c: ch, client: c, stream: stream}
}

func (c *Client) forget(s *Subscription) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.subs[s]; ok {
		delete(c.subs, s)
		close(s.c)
	}
	if s.instance {
		delete(c.inst, s.rid)
	}
}

// Unsubscribe asks the server to stop the subscription, then closes C. For
// an instance subscription the server, as DCRF does, stops every instance
// subscription of this connection to that object: other Subscriptions of
// this client on the same object then receive nothing more.
func (s *Subscription) Unsubscribe(ctx context.Context) error {
	var p Payload
	if s.instance {
		p = Payload{Action: "unsubscribe_instance", PK: s.pk}
	} else {
		data := map[string]any{"action": s.action}
		if s.pk != nil {
			data["pk"] = s.pk
		}
		p = Payload{Action: "unsubscribe", Data: data}
	}
	rep, err := s.client.Request(ctx, s.stream, p)
	if err == nil {
		err = rep.Err()
	}
	s.client.forget(s)
	return err
}
