// Package natsbroker implements streamapi.Broker on NATS core pub/sub.
//
// Each change is one message, its JSON, on the subject PREFIX+model; a node
// holds one NATS subscription per model, whose handler nats.go calls from
// one goroutine in arrival order. The connection reconnects forever; what is
// published while a node is away is not kept for it (core NATS, not
// JetStream): with a change log, the server fills the missing seqs from it
// (docs/deploy.md).
package natsbroker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/streamapi/streamapi"
)

// Options configures a Broker. The zero value is valid.
type Options struct {
	// Prefix is put before the model label to name a subject; "" means
	// "streamapi.". Deployments sharing a NATS keep apart by prefix.
	Prefix string
	// Logger reports connection changes and undecodable messages. Nil uses
	// slog.Default().
	Logger *slog.Logger
}

// Broker is a streamapi.Broker on NATS.
type Broker struct {
	nc     *nats.Conn
	prefix string
	log    *slog.Logger

	mu     sync.Mutex
	closed bool
}

var _ streamapi.Broker = (*Broker)(nil)

// ErrClosed is returned by Publish and Subscribe after Close.
var ErrClosed = errors.New("nats broker: closed")

// Open connects to the NATS server at url (nats://host:port).
func Open(ctx context.Context, url string, opts Options) (*Broker, error) {
	b := &Broker{prefix: opts.Prefix, log: opts.Logger}
	if b.prefix == "" {
		b.prefix = "streamapi."
	}
	if b.log == nil {
		b.log = slog.Default()
	}
	timeout := 5 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	nc, err := nats.Connect(url,
		nats.Name("streamapi"),
		nats.Timeout(timeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.PingInterval(5*time.Second),
		nats.MaxPingsOutstanding(2),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			b.log.Warn("nats broker: disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			b.log.Info("nats broker: reconnected", "server", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, s *nats.Subscription, err error) {
			subject := ""
			if s != nil {
				subject = s.Subject
			}
			b.log.Error("nats broker: asynchronous error", "subject", subject, "err", err)
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("nats broker: connect to %s: %w", redact(url), err)
	}
	b.nc = nc
	return b, nil
}

func redact(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Redacted()
	}
	return raw
}

// Publish sends each change to its model's subject, in order. While the
// connection is re-establishing, nats.go buffers them.
func (b *Broker) Publish(_ context.Context, changes ...streamapi.Change) error {
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return ErrClosed
	}
	for i := range changes {
		msg, err := json.Marshal(&changes[i])
		if err != nil {
			return fmt.Errorf("nats broker: encode: %w", err)
		}
		if err := b.nc.Publish(b.prefix+changes[i].Model, msg); err != nil {
			return fmt.Errorf("nats broker: publish: %w", err)
		}
	}
	return nil
}

// Subscribe subscribes to topic's subject and waits until the server has
// it (so nothing published after Subscribe returns is missed).
func (b *Broker) Subscribe(ctx context.Context, topic string, h streamapi.ChangeHandler) (func(), error) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, ErrClosed
	}
	b.mu.Unlock()
	hctx := context.WithoutCancel(ctx)
	s, err := b.nc.Subscribe(b.prefix+topic, func(m *nats.Msg) {
		var c streamapi.Change
		if err := json.Unmarshal(m.Data, &c); err != nil {
			b.log.Error("nats broker: undecodable message", "subject", m.Subject, "err", err)
			return
		}
		h(hctx, c)
	})
	if err != nil {
		return nil, fmt.Errorf("nats broker: subscribe to %s: %w", topic, err)
	}
	// Generous limits: a handler only queues; a node that still falls
	// behind drops messages (reported to ErrorHandler), which the server
	// refills from the change log.
	_ = s.SetPendingLimits(1<<20, 256<<20)
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := b.nc.FlushWithContext(fctx); err != nil {
		_ = s.Unsubscribe()
		return nil, fmt.Errorf("nats broker: subscribe to %s: %w", topic, err)
	}
	var once sync.Once
	return func() { once.Do(func() { _ = s.Unsubscribe() }) }, nil
}

// Close drains nothing: it closes the connection, which ends every
// subscription.
func (b *Broker) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	b.nc.Close()
	return nil
}
