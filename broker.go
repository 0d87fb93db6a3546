package streamapi

import "context"

// Broker carries committed changes to every node that serves the resource:
// in one process (broker/memory), or between processes (Redis, NATS).
// Every implementation passes internal/brokertest.
//
// A node holds one broker subscription per model label, not one per client
// or object, and fans changes out locally.
type Broker interface {
	Publisher
	// Subscribe calls h for every change published under topic (the model
	// label), in publish order, until the returned cancel function is called
	// or the broker is closed. h must not block for long.
	Subscribe(ctx context.Context, topic string, h ChangeHandler) (cancel func(), err error)
	// Close stops delivery and releases the broker's resources.
	Close() error
}

// ChangeHandler receives changes from a Broker.
type ChangeHandler func(ctx context.Context, c Change)
