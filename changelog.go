package streamapi

import (
	"context"
	"encoding/json"
	"time"
)

// ChangeLog is a store's durable record of committed changes (an outbox):
// each change is written with its object, in the same transaction, and
// numbered per model in commit order (Change.Seq). Servers read it to fill
// what a broker did not deliver (a publisher that crashed after commit, a
// lost broker connection) and to resume subscriptions after a given seq.
// store/sqlstore implements it on SQLite and PostgreSQL.
type ChangeLog interface {
	// ChangesAfter returns, in seq order, up to limit changes of model
	// whose Seq is greater than after.
	ChangesAfter(ctx context.Context, model string, after int64, limit int) ([]Change, error)
	// ChangesOf returns, in seq order, up to limit changes of the object
	// of model whose canonical pk is pk, with after < Seq <= upto. It
	// reads an index on (model, pk, seq): it costs what it returns, not
	// the model's changes in the range.
	ChangesOf(ctx context.Context, model string, pk json.RawMessage, after, upto int64, limit int) ([]Change, error)
	// Bounds returns the lowest seq the log still holds for model and the
	// highest seq assigned to it so far (0 when none). When the log holds
	// none of the model's changes, first is last+1.
	Bounds(ctx context.Context, model string) (first, last int64, err error)
	// Trim deletes the changes committed before t and returns how many. It
	// may keep each model's newest change (SQLite numbers from it).
	Trim(ctx context.Context, before time.Time) (int64, error)
	// TrimKeep deletes the oldest changes of model beyond its newest keep
	// (at least 1), and returns how many: the log's bound by size, next to
	// Trim's by age.
	TrimKeep(ctx context.Context, model string, keep int64) (int64, error)
}

// ChangeNotifier is implemented by change logs that learn of changes
// written by other processes without going through a broker (PostgreSQL
// triggers with NOTIFY). Notify returns a channel that receives a model
// label when that model's log may have grown; it is closed when the log is.
type ChangeNotifier interface {
	Notify() <-chan string
}
