package streamapi

import (
	"context"
	"encoding/json"
)

// Live lists (docs/protocol.md §6.2): a client subscribes to a list query
// and gets its first page_size objects, then the events that keep that
// window, and the query's count, as they are.

// LiveLister is implemented by resources that serve live lists.
type LiveLister interface {
	// LiveList parses query, a live list's parameters (those of a list
	// request but page and cursor), for u, and checks that u may list.
	// The list holds nothing until its first Read is installed.
	LiveList(ctx context.Context, u *User, query json.RawMessage) (LiveList, error)
	// DecodeLive decodes a change of the resource's model once for all
	// its live lists.
	DecodeLive(c *Change) LiveChange
}

// LiveChange is a change decoded for live lists.
type LiveChange interface {
	// Value returns a column's value in the object before the change
	// (after false) or after it; ok is false for NULL, or no object.
	Value(after bool, column string) (v any, ok bool)
	// Change returns the change itself.
	Change() *Change
}

// LiveList is one client's live list. Its methods are called one at a
// time, with its model's changes in seq order.
type LiveList interface {
	// Conds returns the conditions an object must meet to be in the
	// list (the query's and its user's scope, by column), for indexing.
	Conds() []Cond
	// Read reads the window and the count in ctx (one read snapshot),
	// and returns the model's last seq in it; install makes them the
	// list's and returns the events that take a client from the window
	// it holds to the new one (none for the first).
	Read(ctx context.Context) (seq int64, install func() LiveUpdate, err error)
	// MayRead reports whether Change may read the store for c (an
	// object leaving a full window is replaced by the next).
	MayRead(c LiveChange) bool
	// Change applies c and returns what it did to the window and count.
	// After an error the window is unknown: the list must be dropped.
	Change(ctx context.Context, c LiveChange) (LiveUpdate, error)
	// Results returns the window, serialised as a list serialises it.
	Results() (json.RawMessage, error)
	// Count returns the number of objects the query matches, and
	// whether the client asked for it (with_count).
	Count() (n int, asked bool)
}

// LiveUpdate is what one change (or a reload) did to a live list.
type LiveUpdate struct {
	Events []LiveEvent
	// CountChanged reports whether the count moved; Count is the count
	// after the change.
	CountChanged bool
	Count        int
}

// LiveEvent is one event of a live list: Action is ChangeCreate when the
// object enters the window, ChangeUpdate when it changed in it (Index is
// its new place), ChangeDelete when it leaves (Data is the state last
// sent, Index -1).
type LiveEvent struct {
	Action string
	PK     json.RawMessage
	Data   json.RawMessage
	Index  int
}
