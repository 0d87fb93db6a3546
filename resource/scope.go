package resource

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/streamapi/streamapi"
)

// Q is a condition in the list query language, for scopes: the objects a
// user may see. Build it with Where, And, Or, All and Nothing. It is
// evaluated in SQL for lists and lookups, and in memory for events, with
// the same result (docs/queries.md).
type Q struct {
	kind   qkind
	filter string // leaf: "field" or "field__lookup"
	value  any
	subs   []Q
}

type qkind int

const (
	qLeaf qkind = iota
	qAnd
	qOr
	qAll
	qNothing
)

// Where is the condition filter=value, with the list query language's
// names and lookups ("owner", "published", "votes__gte", "question__in").
// Any stored field may be named, declared in Filters or not. value is a Go
// value of the field's type (a slice for __in, a bool for __isnull).
func Where(filter string, value any) Q { return Q{kind: qLeaf, filter: filter, value: value} }

// And holds when every q holds.
func And(qs ...Q) Q { return Q{kind: qAnd, subs: qs} }

// Or holds when at least one q holds.
func Or(qs ...Q) Q { return Q{kind: qOr, subs: qs} }

// All holds for every object: no restriction.
func All() Q { return Q{kind: qAll} }

// Nothing holds for no object.
func Nothing() Q { return Q{kind: qNothing} }

// compile turns q into conditions that must all hold.
func (r *Resource[T]) compile(q Q) ([]streamapi.Cond, error) {
	switch q.kind {
	case qAll:
		return nil, nil
	case qNothing:
		return []streamapi.Cond{{Column: r.pkField.column, Lookup: streamapi.LookupIn, Value: []any{}}}, nil
	case qAnd:
		var out []streamapi.Cond
		for _, s := range q.subs {
			cs, err := r.compile(s)
			if err != nil {
				return nil, err
			}
			out = append(out, cs...)
		}
		return out, nil
	case qOr:
		var any []streamapi.Cond
		for _, s := range q.subs {
			cs, err := r.compile(s)
			if err != nil {
				return nil, err
			}
			if len(cs) == 0 {
				return nil, nil // one branch holds for everything
			}
			any = append(any, streamapi.Cond{All: cs})
		}
		if len(any) == 0 {
			return r.compile(Nothing())
		}
		return []streamapi.Cond{{Any: any}}, nil
	}
	fname, lookup, ok := strings.Cut(q.filter, "__")
	if !ok {
		lookup = streamapi.LookupExact
	}
	qf := r.qfields[fname]
	if qf == nil {
		return nil, fmt.Errorf("resource %s: scope names %q, which is not a stored field", r.cfg.Stream, fname)
	}
	c := streamapi.Cond{Column: qf.column, Lookup: lookup}
	base := qf.typ
	if base.Kind() == reflect.Pointer {
		base = base.Elem()
	}
	conv := func(v any) (any, error) {
		rv := reflect.ValueOf(v)
		if !rv.IsValid() || !rv.Type().ConvertibleTo(base) || (rv.Kind() == reflect.String) != (base.Kind() == reflect.String) {
			return nil, fmt.Errorf("resource %s: scope value %v (%T) for %s, want %s", r.cfg.Stream, v, v, fname, base)
		}
		out := rv.Convert(base).Interface()
		if base == timeType {
			out = normalTime(out.(time.Time))
		}
		return out, nil
	}
	switch lookup {
	case streamapi.LookupIsNull:
		b, ok := q.value.(bool)
		if !ok {
			return nil, fmt.Errorf("resource %s: scope %s wants a bool", r.cfg.Stream, q.filter)
		}
		c.Value = b
	case streamapi.LookupIn:
		rv := reflect.ValueOf(q.value)
		if rv.Kind() != reflect.Slice {
			return nil, fmt.Errorf("resource %s: scope %s wants a slice", r.cfg.Stream, q.filter)
		}
		vals := make([]any, rv.Len())
		for i := range vals {
			x, err := conv(rv.Index(i).Interface())
			if err != nil {
				return nil, err
			}
			vals[i] = x
		}
		c.Value = vals
	default:
		if !containsLookup(lookup) {
			return nil, fmt.Errorf("resource %s: scope %s: unknown lookup", r.cfg.Stream, q.filter)
		}
		x, err := conv(q.value)
		if err != nil {
			return nil, err
		}
		c.Value = x
	}
	return []streamapi.Cond{c}, nil
}

func containsLookup(l string) bool {
	for _, x := range lookups {
		if x == l {
			return true
		}
	}
	return false
}

// scopeFor returns the conditions of u's scope; nil when the resource has
// none (or u sees everything).
func (r *Resource[T]) scopeFor(u *streamapi.User) ([]streamapi.Cond, error) {
	if r.cfg.Scope == nil {
		return nil, nil
	}
	return r.compile(r.cfg.Scope(u))
}

// visible reports whether u may see obj.
func (r *Resource[T]) visible(u *streamapi.User, obj *T) (bool, error) {
	conds, err := r.scopeFor(u)
	if err != nil {
		return false, err
	}
	return r.Match(obj, conds), nil
}

// getVisible loads the object with key pk if u may see it: ENOTFOUND
// otherwise, as for an object that does not exist.
func (r *Resource[T]) getVisible(ctx context.Context, u *streamapi.User, pk any) (*T, error) {
	obj, err := r.Get(ctx, pk)
	if err != nil {
		return nil, err
	}
	return r.visibleOr404(u, obj)
}

// lockVisible is getVisible for the object a write is about: inside the
// write's transaction its row is locked until commit (Table.Lock), so
// that concurrent writers of it wait for each other.
func (r *Resource[T]) lockVisible(ctx context.Context, u *streamapi.User, pk any) (*T, error) {
	obj := new(T)
	if err := r.table.Lock(ctx, obj, pk); err != nil {
		return nil, err
	}
	return r.visibleOr404(u, obj)
}

func (r *Resource[T]) visibleOr404(u *streamapi.User, obj *T) (*T, error) {
	ok, err := r.visible(u, obj)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, streamapi.ErrNotFound
	}
	return obj, nil
}

// ListFor is List restricted to what u may see: for custom list actions,
// whose code the scope cannot reach otherwise.
func (r *Resource[T]) ListFor(ctx context.Context, u *streamapi.User, q streamapi.ListQuery) ([]T, error) {
	conds, err := r.scopeFor(u)
	if err != nil {
		return nil, err
	}
	q.Where = append(append([]streamapi.Cond(nil), q.Where...), conds...)
	return r.List(ctx, q)
}

// Scoped implements streamapi.Scoper.
func (r *Resource[T]) Scoped() bool { return r.cfg.Scope != nil }

// Visibility implements streamapi.Scoper: c's objects are decoded once,
// each user's scope is evaluated in memory, once per user ID.
func (r *Resource[T]) Visibility(c *streamapi.Change) streamapi.Visibility {
	decode := func(b json.RawMessage) *T {
		if len(b) == 0 {
			return nil
		}
		obj := new(T)
		if json.Unmarshal(b, obj) != nil {
			return nil // fail closed: an object that does not decode is seen by no one
		}
		return obj
	}
	var before, after *T
	switch c.Action {
	case streamapi.ChangeCreate:
		after = decode(c.Data)
	case streamapi.ChangeDelete:
		before = decode(c.Data)
	default:
		after = decode(c.Data)
		before = decode(c.Before)
		if len(c.Before) == 0 {
			before = after // a change logged without its prior state
		}
	}
	type seen struct{ before, after bool }
	var mu sync.Mutex
	// By user value, not ID: a scope may read claims, which two tokens of
	// one user need not share. Connections share a *User per handshake.
	cache := map[*streamapi.User]seen{}
	return func(u *streamapi.User) (bool, bool) {
		key := u
		mu.Lock()
		defer mu.Unlock()
		if s, ok := cache[key]; ok {
			return s.before, s.after
		}
		conds, err := r.scopeFor(u)
		var s seen
		if err == nil {
			s = seen{before != nil && r.Match(before, conds), after != nil && r.Match(after, conds)}
		}
		cache[key] = s
		return s.before, s.after
	}
}
