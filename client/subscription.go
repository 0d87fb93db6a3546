package client

import (
	"context"
	"encoding/json"
	"strconv"
)

// Subscription receives the events of one subscription on C, which is
// closed when the connection ends.
type Subscription struct {
	// C delivers the events.
	C <-chan Event

	c        chan Event
	client   *Client
	stream   string
	action   string // Channels API: create, update or delete
	pk       any
	pkKey    string // canonical JSON of pk; "" for any
	instance bool
	rid      string
}

func (s *Subscription) matches(ev *Event) bool {
	if s.instance || ev.Stream != s.stream || ev.Action != s.action {
		return false
	}
	return s.pkKey == "" || string(compact(ev.PK)) == s.pkKey
}

// Subscribe sends a Channels API subscribe for action ("create", "update"
// or "delete") on stream, for one object when pk is not nil, and returns
// the subscription once the server has accepted it. A refusal is returned
// as a *StatusError.
func (c *Client) Subscribe(ctx context.Context, stream, action string, pk any) (*Subscription, error) {
	s := c.newSub(stream)
	s.action, s.pk = action, pk
	data := map[string]any{"action": action}
	if pk != nil {
		b, err := json.Marshal(pk)
		if err != nil {
			return nil, err
		}
		s.pkKey = string(compact(b))
		data["pk"] = pk
	}
	// Register first: an event may follow the reply at once.
	c.mu.Lock()
	c.subs[s] = struct{}{}
	c.mu.Unlock()
	rep, err := c.Request(ctx, stream, Payload{Action: "subscribe", Data: data})
	if err == nil {
		err = rep.Err()
	}
	if err != nil {
		c.forget(s)
		return nil, err
	}
	return s, nil
}

// SubscribeInstance sends a DCRF subscribe_instance for the object pk of
// stream; its update and delete events arrive on the subscription.
func (c *Client) SubscribeInstance(ctx context.Context, stream string, pk any) (*Subscription, error) {
	s := c.newSub(stream)
	s.pk, s.instance = pk, true
	rid := "i" + strconv.FormatUint(c.next.Add(1), 10)
	s.rid = strconv.Quote(rid) // the request_id's JSON: a plain ASCII string

	c.mu.Lock()
	c.inst[s.rid] = s
	c.subs[s] = struct{}{}
	c.mu.Unlock()
	rep, err := c.Request(ctx, stream, Payload{Action: "subscribe_instance", PK: pk, RequestID: rid})
	if err == nil {
		err = rep.Err()
	}
	if err != nil {
		c.forget(s)
		return nil, err
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

// Unsubscribe asks the server to stop the subscription, then closes C.
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
