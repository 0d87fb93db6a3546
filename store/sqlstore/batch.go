package sqlstore

import (
	"context"
	"errors"
	"fmt"
)

// Group commit (SQLite). SQLite has one writer. With a transaction per
// write, the writer connection sat idle between transactions while the
// next waiting goroutine was woken and scheduled, and every write paid for
// its own commit. Instead, one goroutine (the committer) owns the writer:
// Tx hands it the function, and it runs the functions waiting at that
// moment (up to maxBatch) in one transaction, each inside its own
// savepoint, so that one failing rolls back only its own work. One commit
// then makes the batch durable, and the batch's changes are logged and
// published in order. Every caller learns its own result after the commit.
// docs/design.md has the trade-offs.

// maxBatch bounds the writes one transaction carries.
const maxBatch = 128

// errClosed answers writes made after Close.
var errClosed = errors.New("sqlstore: the store is closed")

// writeReq is one Tx call waiting for the committer.
type writeReq struct {
	ctx      context.Context
	fn       func(ctx context.Context) error
	done     chan struct{}
	err      error
	panicked bool
	panicVal any
}

// startCommitter starts the goroutine that owns the writer.
func (db *DB) startCommitter() {
	db.wq, db.wStop, db.wDone = make(chan *writeReq), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(db.wDone)
		batch := make([]*writeReq, 0, maxBatch)
		for {
			select {
			case r := <-db.wq:
				batch = append(batch[:0], r)
			case <-db.wStop:
				return
			}
		fill:
			for len(batch) < maxBatch {
				select {
				case r := <-db.wq:
					batch = append(batch, r)
				default:
					break fill
				}
			}
			db.runBatch(batch)
			clear(batch)
		}
	}()
}

// stopCommitter stops the committer once its current batch is done.
func (db *DB) stopCommitter() {
	if db.wq != nil {
		db.wOnce.Do(func() { close(db.wStop) })
		<-db.wDone
	}
}

// batchTx hands fn to the committer and waits for its result. A context
// done before fn starts ends the wait with its error; once fn has started,
// Tx waits for the commit (fn's statements run without the caller's
// cancellation, because SQLite rolls back the whole transaction, other
// callers' work included, when a statement is interrupted).
func (db *DB) batchTx(ctx context.Context, fn func(ctx context.Context) error) error {
	r := &writeReq{ctx: ctx, fn: fn, done: make(chan struct{})}
	select {
	case db.wq <- r:
	case <-ctx.Done():
		return ctx.Err()
	case <-db.wStop:
		return errClosed
	}
	<-r.done
	if r.panicked {
		panic(r.panicVal)
	}
	return r.err
}

// runBatch runs the batch's functions in one transaction and answers each.
func (db *DB) runBatch(batch []*writeReq) {
	defer func() {
		for _, r := range batch {
			close(r.done)
		}
	}()
	ctx := context.Background()
	db.prepareInserts(ctx)
	tx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		for _, r := range batch {
			r.err = fmt.Errorf("sqlstore: begin: %w", err)
		}
		return
	}
	st := &txState{db: db, tx: tx}
	savepoints := len(batch) > 1
	ok := 0
	for _, r := range batch {
		if r.err = r.ctx.Err(); r.err != nil {
			continue
		}
		if savepoints {
			if _, err := tx.ExecContext(ctx, "SAVEPOINT w"); err != nil {
				r.err = fmt.Errorf("sqlstore: savepoint: %w", err)
				continue
			}
		}
		mark := len(st.changes)
		r.run(context.WithValue(context.WithoutCancel(r.ctx), txKey{}, st))
		if r.err != nil {
			st.changes = st.changes[:mark]
			if savepoints {
				_, err := tx.ExecContext(ctx, "ROLLBACK TO w")
				if err == nil {
					_, err = tx.ExecContext(ctx, "RELEASE w")
				}
				if err != nil {
					db.failBatch(tx, batch, fmt.Errorf("sqlstore: roll back to savepoint: %w", err))
					return
				}
			}
			continue
		}
		if savepoints {
			if _, err := tx.ExecContext(ctx, "RELEASE w"); err != nil {
				db.failBatch(tx, batch, fmt.Errorf("sqlstore: release savepoint: %w", err))
				return
			}
		}
		ok++
	}
	if ok == 0 {
		_ = tx.Rollback()
		return
	}
	if db.changeLog && len(st.changes) > 0 {
		if err := st.logChanges(ctx); err != nil {
			db.failBatch(tx, batch, fmt.Errorf("sqlstore: %w", mapErr(err)))
			return
		}
	}
	db.pubMu.Lock()
	defer db.pubMu.Unlock()
	if err := tx.Commit(); err != nil {
		db.failBatch(nil, batch, fmt.Errorf("sqlstore: commit: %w", mapErr(err)))
		return
	}
	db.publish(ctx, st.changes)
}

// failBatch rolls tx back (when not nil) and answers err to every caller
// whose function had succeeded: none of the batch is written.
func (db *DB) failBatch(tx interface{ Rollback() error }, batch []*writeReq, err error) {
	if tx != nil {
		_ = tx.Rollback()
	}
	for _, r := range batch {
		if r.err == nil && !r.panicked {
			r.err = err
		}
	}
}

// run calls the function, turning a panic into a failure of this write
// alone; batchTx panics again in the caller's goroutine.
func (r *writeReq) run(ctx context.Context) {
	defer func() {
		if v := recover(); v != nil {
			r.panicked, r.panicVal = true, v
			r.err = fmt.Errorf("sqlstore: panic in transaction: %v", v)
		}
	}()
	r.err = r.fn(ctx)
}
