package storetest

import (
	"context"
	"strings"
	"sync/atomic"

	"github.com/uptrace/bun"
)

// Statements is a bun.QueryHook counting the statements that begin with
// Prefix (e.g. "UPDATE"): add it with bun.DB.AddQueryHook.
type Statements struct {
	Prefix string
	n      atomic.Int64
}

// BeforeQuery does nothing.
func (s *Statements) BeforeQuery(ctx context.Context, _ *bun.QueryEvent) context.Context {
	return ctx
}

// AfterQuery counts e when its query begins with Prefix.
func (s *Statements) AfterQuery(_ context.Context, e *bun.QueryEvent) {
	if strings.HasPrefix(strings.TrimSpace(e.Query), s.Prefix) {
		s.n.Add(1)
	}
}

// Count returns how many statements were counted.
func (s *Statements) Count() int64 { return s.n.Load() }
