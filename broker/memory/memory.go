// Package memory implements streamapi.Broker inside one process: Publish
// calls the topic's handlers synchronously, in subscription order, so changes
// arrive in publish order. It is the broker of a single-node deployment.
package memory

import (
	"context"
	"errors"
	"sync"

	"github.com/streamapi/streamapi"
)

// Broker is an in-process streamapi.Broker. The zero value is not usable;
// call New.
type Broker struct {
	mu     sync.RWMutex
	subs   map[string][]*sub
	closed bool
}

type sub struct{ h streamapi.ChangeHandler }

var _ streamapi.Broker = (*Broker)(nil)

// ErrClosed is returned by Publish and Subscribe after Close.
var ErrClosed = errors.New("memory broker: closed")

// New returns an empty broker.
func New() *Broker { return &Broker{subs: make(map[string][]*sub)} }

// Publish delivers each change to the handlers of its topic (c.Model) before
// returning. The handlers run without the broker's lock held, so a handler
// may subscribe or cancel; the subscription lists are copied on write, so
// reading them is a snapshot.
func (b *Broker) Publish(ctx context.Context, changes ...streamapi.Change) error {
	for _, c := range changes {
		b.mu.RLock()
		closed, subs := b.closed, b.subs[c.Model]
		b.mu.RUnlock()
		if closed {
			return ErrClosed
		}
		for _, s := range subs {
			s.h(ctx, c)
		}
	}
	return nil
}

// Subscribe registers h for topic; see streamapi.Broker.
func (b *Broker) Subscribe(_ context.Context, topic string, h streamapi.ChangeHandler) (func(), error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, ErrClosed
	}
	s := &sub{h: h}
	b.subs[topic] = append(b.subs[topic], s)
	var once sync.Once
	return func() {
		once.Do(func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			list := b.subs[topic]
			for i, x := range list {
				if x == s {
					// Copy on write: Publish may be iterating the old slice.
					nl := make([]*sub, 0, len(list)-1)
					nl = append(append(nl, list[:i]...), list[i+1:]...)
					b.subs[topic] = nl
					break
				}
			}
			if len(b.subs[topic]) == 0 {
				delete(b.subs, topic)
			}
		})
	}, nil
}

// Close drops every subscription; later calls fail with ErrClosed.
func (b *Broker) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	b.subs = nil
	return nil
}
