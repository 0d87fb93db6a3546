package sqlstore

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/streamapi/streamapi"
)

// ErrContention answers a write transaction that still conflicted with
// concurrent ones after Options.TxAttempts runs: 409, and the client may
// try again. It is never a 500: nothing is wrong but timing.
var ErrContention = &streamapi.Error{Code: streamapi.ECONFLICT, Message: "The write conflicts with concurrent writes; try again."}

// PostgreSQL's SQLSTATEs for a transaction that may succeed if run again.
const (
	pgSerializationFailure = "40001"
	pgDeadlockDetected     = "40P01"
)

// retryable reports whether err fails a transaction that may succeed if
// run again from the start: nothing of it was committed, and what made it
// fail was another transaction.
func retryable(err error) bool {
	if errors.Is(err, errStale) || errors.Is(err, errBatchLost) || errors.Is(err, streamapi.ErrRetry) {
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == pgSerializationFailure || pe.Code == pgDeadlockDetected
	}
	return false
}

// backoff is the pause before the given attempt's successor: random in
// [0, d) with d doubling from 2 ms up to 100 ms, so that transactions that
// collided do not collide again in step.
func backoff(attempt int) time.Duration {
	d := min(2*time.Millisecond<<min(attempt-1, 10), 100*time.Millisecond)
	return rand.N(d) + time.Millisecond/2
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Retries returns how many write transactions ran again after a
// retryable conflict since Open (for tests and metrics).
func (db *DB) Retries() uint64 { return db.retries.Load() }
