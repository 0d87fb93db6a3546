// Package redisbroker implements streamapi.Broker on Redis pub/sub, the
// way the original's Redis channel layer carries events between nodes.
//
// Each change is one PUBLISH of its JSON on the channel PREFIX+model; a
// node holds one Redis subscription (one connection) per model and calls
// its handlers from one goroutine, in the order Redis delivers. Redis
// pub/sub keeps nothing: a node that is disconnected misses what is
// published meanwhile. That is expected: with a change log, the server
// fills the missing seqs from it (docs/deploy.md).
package redisbroker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/redis/go-redis/v9"
	"github.com/streamapi/streamapi"
)

// Options configures a Broker. The zero value is valid.
type Options struct {
	// Prefix is put before the model label to name a channel; "" means
	// "streamapi:". Deployments sharing a Redis keep apart by prefix.
	Prefix string
	// Logger reports undecodable messages. Nil uses slog.Default().
	Logger *slog.Logger
}

// Broker is a streamapi.Broker on Redis.
type Broker struct {
	rdb    *redis.Client
	prefix string
	log    *slog.Logger

	mu     sync.Mutex
	closed bool
	subs   map[*sub]struct{}
}

type sub struct {
	ps   *redis.PubSub
	done chan struct{}
	once sync.Once
}

var _ streamapi.Broker = (*Broker)(nil)

// ErrClosed is returned by Publish and Subscribe after Close.
var ErrClosed = errors.New("redis broker: closed")

// Open connects to the Redis server at url (redis://[user:pass@]host:port[/db]).
func Open(ctx context.Context, url string, opts Options) (*Broker, error) {
	o, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("redis broker: %w", err)
	}
	rdb := redis.NewClient(o)
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("redis broker: connect to %s: %w", o.Addr, err)
	}
	b := &Broker{rdb: rdb, prefix: opts.Prefix, log: opts.Logger, subs: map[*sub]struct{}{}}
	if b.prefix == "" {
		b.prefix = "streamapi:"
	}
	if b.log == nil {
		b.log = slog.Default()
	}
	return b, nil
}

// Publish sends each change to its model's channel, in order, in one
// round trip.
func (b *Broker) Publish(ctx context.Context, changes ...streamapi.Change) error {
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if len(changes) == 0 {
		return nil
	}
	pipe := b.rdb.Pipeline()
	for i := range changes {
		msg, err := json.Marshal(&changes[i])
		if err != nil {
			return fmt.Errorf("redis broker: encode: %w", err)
		}
		pipe.Publish(ctx, b.prefix+changes[i].Model, msg)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("redis broker: publish: %w", err)
	}
	return nil
}

// Subscribe opens a subscription to topic's channel, waits until Redis has
// confirmed it (so nothing published after Subscribe returns is missed), and
// calls h for each change from one goroutine. go-redis reconnects and
// re-subscribes after a lost connection.
func (b *Broker) Subscribe(ctx context.Context, topic string, h streamapi.ChangeHandler) (func(), error) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, ErrClosed
	}
	b.mu.Unlock()
	ps := b.rdb.Subscribe(ctx, b.prefix+topic)
	if _, err := ps.Receive(ctx); err != nil {
		ps.Close()
		return nil, fmt.Errorf("redis broker: subscribe to %s: %w", topic, err)
	}
	s := &sub{ps: ps, done: make(chan struct{})}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		ps.Close()
		return nil, ErrClosed
	}
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	ch := ps.Channel(redis.WithChannelSize(4096))
	go func() {
		defer close(s.done)
		hctx := context.WithoutCancel(ctx)
		for m := range ch {
			var c streamapi.Change
			if err := json.Unmarshal([]byte(m.Payload), &c); err != nil {
				b.log.Error("redis broker: undecodable message", "channel", m.Channel, "err", err)
				continue
			}
			h(hctx, c)
		}
	}()
	return func() { b.stop(s) }, nil
}

// stop closes one subscription. It does not wait for the subscription's
// goroutine (a handler may cancel its own subscription): a handler call in
// progress may end after stop returns. Close waits for them all.
func (b *Broker) stop(s *sub) {
	s.once.Do(func() {
		b.mu.Lock()
		delete(b.subs, s)
		b.mu.Unlock()
		s.ps.Close()
	})
}

// Close ends every subscription, waits for their goroutines and closes the
// connections.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	subs := make([]*sub, 0, len(b.subs))
	for s := range b.subs {
		subs = append(subs, s)
	}
	b.mu.Unlock()
	for _, s := range subs {
		b.stop(s)
		<-s.done
	}
	return b.rdb.Close()
}
