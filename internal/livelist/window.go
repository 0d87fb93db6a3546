package livelist

import (
	"fmt"
	"slices"
)

// Window is one live list's window: the first Limit objects of its query
// in its order, kept correct change by change, as Zero's take operator
// keeps its bound (rocicorp/mono, zql/src/ivm/take.ts). The objects past
// the window are not held. When one leaves a full window, the next is
// read (Next); when one sorts in ahead of the last of a full window, the
// last is pushed out. A Window is not safe for concurrent use: its list's
// changes come one at a time, in seq order.
type Window[T any] struct {
	limit int
	cmp   func(a, b *T) int // the query's order, ties broken by pk: a total order
	pk    func(*T) string
	items []*T
	// complete is true when no object past the window matches: the
	// snapshot returned fewer than limit, or a refill found none.
	complete bool
}

// Event is one change of a window: Action is "create" when Obj enters it,
// "update" when Obj, in it, changed (Index is its new place), "delete"
// when it leaves (Obj is the state last shown, Index -1). A client that,
// for each event, removes Obj's pk from its list and then, unless it is a
// delete, inserts Obj at Index holds the window.
type Event[T any] struct {
	Action string
	Obj    *T
	Index  int
}

// NewWindow returns the window of limit objects whose first page (in
// order, at most limit) is snapshot.
func NewWindow[T any](limit int, cmp func(a, b *T) int, pk func(*T) string, snapshot []*T) (*Window[T], error) {
	if limit < 1 {
		return nil, fmt.Errorf("livelist: window of %d", limit)
	}
	if len(snapshot) > limit {
		return nil, fmt.Errorf("livelist: snapshot of %d for a window of %d", len(snapshot), limit)
	}
	return &Window[T]{limit: limit, cmp: cmp, pk: pk, items: slices.Clone(snapshot), complete: len(snapshot) < limit}, nil
}

// Items returns the window's objects in order.
func (w *Window[T]) Items() []*T { return slices.Clone(w.items) }

func (w *Window[T]) find(pk string) int {
	for i, it := range w.items {
		if w.pk(it) == pk {
			return i
		}
	}
	return -1
}

// MayRead reports whether a change of the object pk may call next: it is
// in a full window past which objects may match.
func (w *Window[T]) MayRead(pk string) bool {
	return len(w.items) == w.limit && !w.complete && w.find(pk) >= 0
}

// place returns where obj sorts among the items.
func (w *Window[T]) place(obj *T) int {
	i, _ := slices.BinarySearchFunc(w.items, obj, w.cmp)
	return i
}

// last returns the window's last object, nil when it is empty.
func (w *Window[T]) last() *T {
	if len(w.items) == 0 {
		return nil
	}
	return w.items[len(w.items)-1]
}

func (w *Window[T]) insert(i int, obj *T) {
	w.items = slices.Insert(w.items, i, obj)
}

// Change applies one change of the object whose pk is pk: after is its
// state now if it matches the query (nil when it does not, or is gone).
// next returns the first object matching the query that sorts after the
// given one (nil: after nothing), as the store holds it now, or nil when
// there is none: it is called only when an object leaves a full window,
// at most twice per change.
func (w *Window[T]) Change(pk string, after *T, next func(after *T) (*T, error)) ([]Event[T], error) {
	at := w.find(pk)
	if at < 0 {
		if after == nil {
			return nil, nil // neither in the window before nor matching now
		}
		p := w.place(after)
		if len(w.items) < w.limit {
			if !w.complete && p == len(w.items) {
				return nil, nil // past the window's end, behind objects not held
			}
			w.insert(p, after)
			return []Event[T]{{Action: "create", Obj: after, Index: p}}, nil
		}
		if p >= len(w.items) {
			w.complete = false // sorts after the last of a full window: one past it now
			return nil, nil
		}
		last := w.items[len(w.items)-1]
		w.items = w.items[:len(w.items)-1]
		w.insert(p, after)
		w.complete = false
		return []Event[T]{{Action: "delete", Obj: last, Index: -1}, {Action: "create", Obj: after, Index: p}}, nil
	}
	was := w.items[at]
	wasFull := len(w.items) == w.limit
	w.items = slices.Delete(w.items, at, at+1)
	if after != nil {
		p := w.place(after)
		if p < len(w.items) || w.complete || !wasFull {
			// Ahead of an object still in the window, or nothing past it.
			w.insert(p, after)
			return []Event[T]{{Action: "update", Obj: after, Index: p}}, nil
		}
		// It moved to the window's end, behind which objects not held may
		// sort ahead of it: the first past the window decides.
		n, err := next(w.last())
		if err != nil {
			return nil, err
		}
		if n == nil || w.pk(n) == pk || w.cmp(after, n) < 0 {
			w.insert(p, after)
			return []Event[T]{{Action: "update", Obj: after, Index: p}}, nil
		}
		w.items = append(w.items, n)
		return []Event[T]{{Action: "delete", Obj: was, Index: -1}, {Action: "create", Obj: n, Index: len(w.items) - 1}}, nil
	}
	evs := []Event[T]{{Action: "delete", Obj: was, Index: -1}}
	if !wasFull || w.complete {
		return evs, nil
	}
	// A full window lost one: the next past it, if any, comes in.
	n, err := next(w.last())
	if err != nil {
		return nil, err
	}
	if n == nil {
		w.complete = true
		return evs, nil
	}
	w.items = append(w.items, n)
	return append(evs, Event[T]{Action: "create", Obj: n, Index: len(w.items) - 1}), nil
}
