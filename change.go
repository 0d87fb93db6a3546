package streamapi

import "encoding/json"

// Change kinds, as named in events and subscriptions.
const (
	ChangeCreate = "create"
	ChangeUpdate = "update"
	ChangeDelete = "delete"
)

// Change is one committed write to one object. Stores produce changes after
// a transaction commits; brokers carry them between processes; the hub turns
// each into event frames, encoded once per change.
type Change struct {
	// Model is the resource's model label, e.g. "polls.question". Brokers
	// use it as the topic.
	Model string `json:"model"`
	// Action is ChangeCreate, ChangeUpdate or ChangeDelete.
	Action string `json:"action"`
	// PK is the object's primary key as canonical JSON (e.g. 7 or "a1").
	PK json.RawMessage `json:"pk"`
	// Data is the serialized object: after the change, or as it was before
	// a delete.
	Data json.RawMessage `json:"data"`
	// Before is the object as it was before an update (nil for creates
	// and deletes, whose Data says it all): with Data, it tells whether a
	// change moved the object into or out of what a user may see.
	Before json.RawMessage `json:"before,omitempty"`
	// Seq numbers the model's changes in commit order, from 1, with no gap,
	// when the store keeps a change log (ChangeLog); 0 otherwise. Events
	// carry it so that clients can resume after it.
	Seq int64 `json:"seq,omitempty"`
}

// Frame is one encoded text frame in up to three parts written back to back,
// so that an event encoded once can be shared by subscribers that differ only
// in the request_id spliced between Head and Tail. Parts are read-only.
type Frame struct {
	Head, Mid, Tail []byte
}

// Len returns the frame's length in bytes.
func (f Frame) Len() int { return len(f.Head) + len(f.Mid) + len(f.Tail) }

// Bytes returns the frame as one slice (a copy when it has several parts).
func (f Frame) Bytes() []byte {
	if len(f.Mid) == 0 && len(f.Tail) == 0 {
		return f.Head
	}
	b := make([]byte, 0, f.Len())
	return append(append(append(b, f.Head...), f.Mid...), f.Tail...)
}

// Peer is one client connection as seen by the fan-out. Send must not block:
// a peer that cannot keep up is disconnected by its own connection.
type Peer interface {
	Send(f Frame)
}

// Visibility tells, for one change, whether a user could see its object
// before the change and can after it.
type Visibility func(u *User) (before, after bool)

// Scoper is implemented by resources that restrict which objects a user
// sees (a scope, the counterpart of DRF's per-user get_queryset). The
// fan-out asks it once per change, then per user, in memory.
type Scoper interface {
	// Scoped reports whether the resource has a scope at all.
	Scoped() bool
	// Visibility evaluates the scope against c's object before and after.
	Visibility(c *Change) Visibility
}

// AsSeen returns c as a user who could see its object before it (before)
// and can after it (after) is told of it, following the original's group
// logic: an update that brings the object into view is a create, one that
// takes it out of view is a delete (carrying the object as the user last
// saw it), and a change the user never sees is nothing (ok false).
func AsSeen(c Change, before, after bool) (Change, bool) {
	switch c.Action {
	case ChangeCreate:
		return c, after
	case ChangeDelete:
		return c, before
	}
	switch {
	case before && after:
		return c, true
	case after:
		c.Action, c.Before = ChangeCreate, nil
		return c, true
	case before:
		c.Action = ChangeDelete
		if len(c.Before) > 0 {
			c.Data = c.Before
		}
		c.Before = nil
		return c, true
	}
	return c, false
}
