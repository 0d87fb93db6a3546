package streamapi

import (
	"context"
	"encoding/json"
	"reflect"
)

// Store persists the objects of resources and reports every committed write
// as a Change to its Publisher. Implementations: store/sqlstore (SQLite, and
// PostgreSQL later). Every implementation passes internal/storetest.
//
// Transactions travel in the context: inside Tx, every Table call made with
// the context handed to fn joins that transaction, and the changes it makes
// are published once, after commit, in commit order. Outside Tx each write is
// its own transaction.
type Store interface {
	// Table returns the table holding model, a pointer to a struct (e.g.
	// (*Question)(nil)), whose changes carry the given model label.
	Table(model any, label string) (Table, error)
	// Tx runs fn in one write transaction. If fn returns an error, or
	// panics, the transaction is rolled back and no change is published. A Tx
	// inside a Tx joins the outer one.
	Tx(ctx context.Context, fn func(ctx context.Context) error) error
	// Close releases the store's connections.
	Close() error
}

// Table reads and writes the objects of one model. dst and obj are pointers
// to the model's struct; list destinations are pointers to slices of it.
// Methods return ENOTFOUND when the object does not exist.
type Table interface {
	// Label returns the model label.
	Label() string
	// PKType returns the Go type of the primary key.
	PKType() reflect.Type
	// Get loads the object whose primary key is pk into dst.
	Get(ctx context.Context, dst any, pk any) error
	// List loads up to q.Limit objects after skipping q.Offset, in primary
	// key order.
	List(ctx context.Context, dst any, q ListQuery) error
	// Count returns how many objects q's filters select (its Offset and
	// Limit are ignored).
	Count(ctx context.Context, q ListQuery) (int, error)
	// Insert stores obj, filling in generated columns (the primary key).
	Insert(ctx context.Context, obj any) error
	// Update overwrites the stored object having obj's primary key.
	Update(ctx context.Context, obj any) error
	// Delete removes the object having obj's primary key; obj is the object
	// as it was, which the delete event carries.
	Delete(ctx context.Context, obj any) error
}

// ListQuery selects one page of a list.
type ListQuery struct {
	// Offset and Limit select the page; Limit 0 means no limit.
	Offset, Limit int
	// Equal keeps the objects whose columns (by SQL column name) equal the
	// given values. A column the table does not have is an EINVALID error.
	Equal map[string]any
}

// Publisher receives committed changes, in commit order. A Broker is one.
type Publisher interface {
	Publish(ctx context.Context, changes ...Change) error
}

// EncodePK returns the canonical JSON of a primary key.
func EncodePK(pk any) json.RawMessage {
	b, err := json.Marshal(pk)
	if err != nil {
		return json.RawMessage("null")
	}
	return b
}
