// Package livelist holds the engine of live lists (query subscriptions):
// this file, the index that finds, for one changed object, the live lists
// whose filters it may match, without visiting the others.
//
// Each list is filed under one of its conditions, its anchor, chosen as
// the most selective kind it has: an equality (a hash lookup), then an
// __in (one entry per value), then a range (an ordered tree of bounds).
// A list with none of those (only substring filters, or no filter) is
// visited for every change. The anchor must hold for the list to match,
// so the lists found are a superset of those that match: the caller
// checks each one's whole query, in memory, as events are checked.
// Matching a change costs a lookup per indexed field plus the lists
// found, not the lists registered (docs/performance.md).
package livelist

import (
	"cmp"
	"fmt"
	"sync"
	"time"

	"github.com/google/btree"
	"github.com/streamapi/streamapi"
)

// ID names one live list in an Index.
type ID uint64

// Index files live lists by an anchor condition each. It is safe for
// concurrent use.
type Index struct {
	mu      sync.RWMutex
	eq      map[string]map[any]map[ID]struct{} // column → value → lists
	lower   map[string]*btree.BTreeG[bound]    // column → lists anchored on a lower bound (gt, gte)
	upper   map[string]*btree.BTreeG[bound]    // column → lists anchored on an upper bound (lt, lte)
	rest    map[ID]struct{}                    // lists with no anchor
	anchors map[ID][]entry                     // where each list is filed, to remove it
}

// bound is a range anchor: the list id is visited for values past v
// (above for a lower bound, below for an upper one), v itself included
// when incl.
type bound struct {
	v    any
	incl bool
	id   ID
}

type entry struct {
	column string
	kind   byte // 'e' equality, 'l' lower bound, 'u' upper bound
	b      bound
}

// New returns an empty index.
func New() *Index {
	return &Index{
		eq:      map[string]map[any]map[ID]struct{}{},
		lower:   map[string]*btree.BTreeG[bound]{},
		upper:   map[string]*btree.BTreeG[bound]{},
		rest:    map[ID]struct{}{},
		anchors: map[ID][]entry{},
	}
}

// key normalizes a condition's or a field's value for comparing: the Go
// value of the field's type, times as Unix nanoseconds. ok is false for a
// value the index cannot order or hash.
func key(v any) (any, bool) {
	switch x := v.(type) {
	case time.Time:
		return x.UnixNano(), true
	case int:
		return int64(x), true
	case int8:
		return int64(x), true
	case int16:
		return int64(x), true
	case int32:
		return int64(x), true
	case int64, string, float64, bool:
		return x, true
	case uint:
		return uint64(x), true
	case uint8:
		return uint64(x), true
	case uint16:
		return uint64(x), true
	case uint32:
		return uint64(x), true
	case uint64:
		return x, true
	case float32:
		return float64(x), true
	}
	return nil, false
}

// compare orders two normalized values of one column (the same type).
func compare(a, b any) int {
	switch x := a.(type) {
	case int64:
		return cmp.Compare(x, b.(int64))
	case uint64:
		return cmp.Compare(x, b.(uint64))
	case float64:
		return cmp.Compare(x, b.(float64))
	case string:
		return cmp.Compare(x, b.(string))
	case bool:
		y := b.(bool)
		switch {
		case x == y:
			return 0
		case !x:
			return -1
		}
		return 1
	}
	panic(fmt.Sprintf("livelist: cannot order %T", a))
}

// lessLower orders lower bounds as an ascending walk reaches them: by
// value, an inclusive bound before an exclusive one of the same value.
func lessLower(a, b bound) bool {
	if c := compare(a.v, b.v); c != 0 {
		return c < 0
	}
	if a.incl != b.incl {
		return a.incl
	}
	return a.id < b.id
}

// lessUpper orders upper bounds so that a descending walk reaches, among
// bounds of one value, the inclusive ones first.
func lessUpper(a, b bound) bool {
	if c := compare(a.v, b.v); c != 0 {
		return c < 0
	}
	if a.incl != b.incl {
		return b.incl
	}
	return a.id < b.id
}

// anchor picks the condition to file conds under: an equality, else an
// __in, else a range; ok false when none can be indexed. Conditions are
// the conjunction of the list's filters (no Any or All).
func anchor(conds []streamapi.Cond) (c streamapi.Cond, ok bool) {
	rank := func(c streamapi.Cond) int {
		if len(c.Any) > 0 || len(c.All) > 0 || c.Member != nil {
			return 0
		}
		switch c.Lookup {
		case streamapi.LookupExact:
			if _, ok := key(c.Value); ok {
				return 4
			}
		case streamapi.LookupIn:
			vs, _ := c.Value.([]any)
			for _, v := range vs {
				if _, ok := key(v); !ok {
					return 0
				}
			}
			return 3
		case streamapi.LookupGT, streamapi.LookupGTE, streamapi.LookupLT, streamapi.LookupLTE:
			if _, ok := key(c.Value); ok {
				return 2
			}
		}
		return 0
	}
	best := 0
	for _, x := range conds {
		if r := rank(x); r > best {
			best, c = r, x
		}
	}
	return c, best > 0
}

// Add files list id, whose query is the conjunction conds. Adding an id
// again replaces its entry.
func (x *Index) Add(id ID, conds []streamapi.Cond) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.removeLocked(id)
	c, ok := anchor(conds)
	if !ok {
		x.rest[id] = struct{}{}
		x.anchors[id] = nil
		return
	}
	var es []entry
	switch c.Lookup {
	case streamapi.LookupExact:
		k, _ := key(c.Value)
		es = append(es, entry{column: c.Column, kind: 'e', b: bound{v: k, id: id}})
	case streamapi.LookupIn:
		seen := map[any]bool{}
		for _, v := range c.Value.([]any) {
			k, _ := key(v)
			if !seen[k] {
				seen[k] = true
				es = append(es, entry{column: c.Column, kind: 'e', b: bound{v: k, id: id}})
			}
		}
	default:
		k, _ := key(c.Value)
		kind := byte('l')
		if c.Lookup == streamapi.LookupLT || c.Lookup == streamapi.LookupLTE {
			kind = 'u'
		}
		incl := c.Lookup == streamapi.LookupGTE || c.Lookup == streamapi.LookupLTE
		es = append(es, entry{column: c.Column, kind: kind, b: bound{v: k, incl: incl, id: id}})
	}
	for _, e := range es {
		switch e.kind {
		case 'e':
			byVal := x.eq[e.column]
			if byVal == nil {
				byVal = map[any]map[ID]struct{}{}
				x.eq[e.column] = byVal
			}
			ids := byVal[e.b.v]
			if ids == nil {
				ids = map[ID]struct{}{}
				byVal[e.b.v] = ids
			}
			ids[id] = struct{}{}
		case 'l', 'u':
			trees, less := x.lower, lessLower
			if e.kind == 'u' {
				trees, less = x.upper, lessUpper
			}
			t := trees[e.column]
			if t == nil {
				t = btree.NewG(16, less)
				trees[e.column] = t
			}
			t.ReplaceOrInsert(e.b)
		}
	}
	x.anchors[id] = es
}

// Remove unfiles list id.
func (x *Index) Remove(id ID) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.removeLocked(id)
}

func (x *Index) removeLocked(id ID) {
	es, ok := x.anchors[id]
	if !ok {
		return
	}
	delete(x.anchors, id)
	delete(x.rest, id)
	for _, e := range es {
		switch e.kind {
		case 'e':
			if ids := x.eq[e.column][e.b.v]; ids != nil {
				delete(ids, id)
				if len(ids) == 0 {
					delete(x.eq[e.column], e.b.v)
					if len(x.eq[e.column]) == 0 {
						delete(x.eq, e.column)
					}
				}
			}
		case 'l', 'u':
			trees := x.lower
			if e.kind == 'u' {
				trees = x.upper
			}
			if t := trees[e.column]; t != nil {
				t.Delete(e.b)
				if t.Len() == 0 {
					delete(trees, e.column)
				}
			}
		}
	}
}

// Len returns how many lists the index holds.
func (x *Index) Len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.anchors)
}

// Candidates calls fn once for each list whose anchor the object holds:
// every list the object matches, and maybe others. value returns the
// object's value of a column (nil, or false, for NULL or none).
func (x *Index) Candidates(value func(column string) (any, bool), fn func(ID)) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	seen := map[ID]struct{}{}
	visit := func(id ID) {
		if _, dup := seen[id]; !dup {
			seen[id] = struct{}{}
			fn(id)
		}
	}
	for id := range x.rest {
		visit(id)
	}
	for column, byVal := range x.eq {
		v, ok := value(column)
		if !ok {
			continue
		}
		if k, ok := key(v); ok {
			for id := range byVal[k] {
				visit(id)
			}
		}
	}
	walk := func(trees map[string]*btree.BTreeG[bound], down bool) {
		for column, t := range trees {
			v, ok := value(column)
			if !ok {
				continue
			}
			k, ok := key(v)
			if !ok {
				continue
			}
			// Lower bounds at or below the value, in order, until past
			// it; upper bounds at or above it, from the top down.
			reach := func(b bound) bool {
				c := compare(b.v, k)
				if down {
					c = -c
				}
				if c > 0 || c == 0 && !b.incl {
					return false
				}
				visit(b.id)
				return true
			}
			if down {
				t.Descend(reach)
			} else {
				t.Ascend(reach)
			}
		}
	}
	walk(x.lower, false)
	walk(x.upper, true)
}
