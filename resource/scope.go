package resource

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"sort"
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
	rel    *Relation // qRel: the relation; value is the user ID
}

type qkind int

const (
	qLeaf qkind = iota
	qAnd
	qOr
	qAll
	qNothing
	qRel
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
	if q.kind == qRel {
		return r.compileRel(q)
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

// compileRel compiles a relation scope's leaf.
func (r *Resource[T]) compileRel(q Q) ([]streamapi.Cond, error) {
	if q.rel == nil {
		return nil, fmt.Errorf("resource %s: scope follows a relation not declared yet (resource.Membership)", r.cfg.Stream)
	}
	qf := r.qfields[q.filter]
	if qf == nil {
		return nil, fmt.Errorf("resource %s: scope names %q, which is not a stored field", r.cfg.Stream, q.filter)
	}
	rel, uid := q.rel, q.value.(string)
	return []streamapi.Cond{{Column: qf.column, Member: &streamapi.Membership{
		Table: rel.table, Group: rel.groupCol, User: rel.userCol, UserID: uid,
		Has: func(group []byte) bool { return rel.has(uid, group) },
	}}}, nil
}

// probeUsers are the users a scope is tried with at New and by
// Relations: anonymous and an authenticated one.
var probeUsers = []*streamapi.User{nil, {ID: "\x00probe", Claims: map[string]any{}}}

// probeScope compiles the scope for the probe users, so that a name it
// gets wrong fails New rather than every request, and returns the
// relations it follows with the fields that name them. A relation not
// declared yet (a membership resource whose scope follows its own
// relation) is skipped.
func (r *Resource[T]) probeScope() (map[*Relation][]string, error) {
	if r.cfg.Scope == nil {
		return nil, nil
	}
	rels := map[*Relation][]string{}
	var walk func(q Q) error
	walk = func(q Q) error {
		switch q.kind {
		case qAnd, qOr:
			for _, s := range q.subs {
				if err := walk(s); err != nil {
					return err
				}
			}
			return nil
		case qRel:
			if q.rel == nil {
				return nil
			}
			if !slices.Contains(rels[q.rel], q.filter) {
				rels[q.rel] = append(rels[q.rel], q.filter)
			}
		}
		_, err := r.compile(q)
		return err
	}
	probed := 0
	for _, u := range probeUsers {
		q, ok := probe(r.cfg.Scope, u)
		if !ok {
			continue // a scope that needs a real user (it reads claims)
		}
		probed++
		if err := walk(q); err != nil {
			return nil, err
		}
	}
	if probed == 0 {
		return nil, fmt.Errorf("resource %s: the scope panics for an anonymous user (nil) and for an authenticated one with no claims: it cannot be checked, and would panic for such users' events", r.cfg.Stream)
	}
	return rels, nil
}

// probe calls scope for u, reporting false if it panics.
func probe(scope func(*streamapi.User) Q, u *streamapi.User) (q Q, ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	return scope(u), true
}

// hasMember reports whether conds read a membership table.
func hasMember(conds []streamapi.Cond) bool {
	for _, c := range conds {
		if c.Member != nil || hasMember(c.All) || hasMember(c.Any) {
			return true
		}
	}
	return false
}

// withBefore returns conds with rel's memberships as they were before the
// transitions ts: for the "before" side of a change that made them.
func withBefore(conds []streamapi.Cond, rel *Relation, ts []streamapi.Transition) []streamapi.Cond {
	out := make([]streamapi.Cond, len(conds))
	for i, c := range conds {
		c.All, c.Any = withBefore(c.All, rel, ts), withBefore(c.Any, rel, ts)
		if m := c.Member; m != nil && m.Table == rel.table {
			m2 := *m
			has, uid := m.Has, m.UserID
			m2.Has = func(group []byte) bool {
				for _, t := range ts {
					if t.User == uid && t.Group == string(group) {
						return !t.Joined
					}
				}
				return has(group)
			}
			c.Member = &m2
		}
		out[i] = c
	}
	return out
}

// visible reports whether u may see obj. A scope that follows a relation
// is evaluated in SQL (inside a write transaction, on what it wrote): the
// in-memory index follows the feed, which may not have delivered the
// transaction's own membership yet.
func (r *Resource[T]) visible(ctx context.Context, u *streamapi.User, obj *T) (bool, error) {
	conds, err := r.scopeFor(u)
	if err != nil {
		return false, err
	}
	if !r.Match(obj, withoutMember(conds)) {
		return false, nil
	}
	if !hasMember(conds) {
		return true, nil
	}
	n, err := r.table.Count(ctx, streamapi.ListQuery{Equal: map[string]any{r.pkField.column: r.pkOf(obj)}, Where: conds})
	if err != nil {
		return false, err
	}
	return n > 0, nil
}

// withoutMember returns conds with every membership condition taken as
// holding: what can be decided in memory before asking SQL.
func withoutMember(conds []streamapi.Cond) []streamapi.Cond {
	if !hasMember(conds) {
		return conds
	}
	out := make([]streamapi.Cond, len(conds))
	for i, c := range conds {
		c.All, c.Any = withoutMember(c.All), withoutMember(c.Any)
		if c.Member != nil {
			c.Member = &streamapi.Membership{Has: func([]byte) bool { return true }}
		}
		out[i] = c
	}
	return out
}

// getVisible loads the object with key pk if u may see it: ENOTFOUND
// otherwise, as for an object that does not exist.
func (r *Resource[T]) getVisible(ctx context.Context, u *streamapi.User, pk any) (*T, error) {
	obj, err := r.Get(ctx, pk)
	if err != nil {
		return nil, err
	}
	return r.visibleOr404(ctx, u, obj)
}

// lockVisible is getVisible for the object a write is about: inside the
// write's transaction its row is locked until commit (Table.Lock), so
// that concurrent writers of it wait for each other.
func (r *Resource[T]) lockVisible(ctx context.Context, u *streamapi.User, pk any) (*T, error) {
	if err := r.lockFirst(ctx, pk); err != nil {
		return nil, err
	}
	obj := new(T)
	if err := r.table.Lock(ctx, obj, pk); err != nil {
		return nil, err
	}
	return r.visibleOr404(ctx, u, obj)
}

// lockFirst runs LockFirst, when set, for the object pk about to be
// locked.
func (r *Resource[T]) lockFirst(ctx context.Context, pk any) error {
	if r.cfg.LockFirst == nil {
		return nil
	}
	return r.cfg.LockFirst(ctx, pk)
}

func (r *Resource[T]) visibleOr404(ctx context.Context, u *streamapi.User, obj *T) (*T, error) {
	ok, err := r.visible(ctx, u, obj)
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
	q, err = r.byNames(q)
	if err != nil {
		return nil, err
	}
	q.Where = append(q.Where, conds...)
	return r.listColumns(ctx, q)
}

// Scoped implements streamapi.Scoper.
func (r *Resource[T]) Scoped() bool { return r.cfg.Scope != nil }

// Visibility implements streamapi.Scoper: c's objects are decoded once,
// each user's scope is evaluated in memory, once per user. For a change
// of a membership model the scope follows, "before" is evaluated without
// the memberships the change itself made or ended.
func (r *Resource[T]) Visibility(c *streamapi.Change) streamapi.Visibility {
	for rel := range r.relations() {
		if rel.model == c.Model {
			if ts, ok := rel.before(c.Seq); ok && len(ts) > 0 {
				return r.VisibilityAcross(c, rel, ts)
			}
		}
	}
	return r.visibility(c, nil, nil)
}

// VisibilityAcross implements streamapi.RelationScoper.
func (r *Resource[T]) VisibilityAcross(c *streamapi.Change, rel streamapi.Relation, ts []streamapi.Transition) streamapi.Visibility {
	rr, _ := rel.(*Relation)
	return r.visibility(c, rr, ts)
}

// visibility evaluates c's objects for each user; with rel, "before"
// takes rel's memberships as they were before ts.
func (r *Resource[T]) visibility(c *streamapi.Change, rel *Relation, ts []streamapi.Transition) streamapi.Visibility {
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
			bconds := conds
			if rel != nil {
				bconds = withBefore(conds, rel, ts)
			}
			s = seen{before != nil && r.Match(before, bconds), after != nil && r.Match(after, conds)}
		}
		cache[key] = s
		return s.before, s.after
	}
}

// relations returns the relations the scope follows, with the fields
// that name them.
func (r *Resource[T]) relations() map[*Relation][]string {
	r.relOnce.Do(func() {
		r.rels, _ = r.probeScope()
	})
	return r.rels
}

// Relations implements streamapi.RelationScoper.
func (r *Resource[T]) Relations() []streamapi.Relation {
	var out []streamapi.Relation
	for rel := range r.relations() {
		out = append(out, rel)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Model() < out[j].Model() })
	return out
}

// Group implements streamapi.RelationScoper: in one read snapshot, the
// model's last seq and up to limit of its objects whose fields naming rel
// hold group (limit+1 when there are more: the caller tells).
func (r *Resource[T]) Group(ctx context.Context, rel streamapi.Relation, group string, limit int) (int64, []streamapi.Change, error) {
	rr, _ := rel.(*Relation)
	names := r.relations()[rr]
	if len(names) == 0 {
		return 0, nil, fmt.Errorf("resource %s: scope does not follow %s", r.cfg.Stream, rel.Model())
	}
	var inGroup []streamapi.Cond
	for _, name := range names {
		qf := r.qfields[name]
		v := reflect.New(qf.typ)
		if err := json.Unmarshal([]byte(group), v.Interface()); err != nil {
			return 0, nil, fmt.Errorf("resource %s: group key %s for %s: %w", r.cfg.Stream, group, name, err)
		}
		x := v.Elem()
		if x.Kind() == reflect.Pointer {
			x = x.Elem()
		}
		inGroup = append(inGroup, streamapi.Cond{Column: qf.column, Lookup: streamapi.LookupExact, Value: x.Interface()})
	}
	var objs []T
	seq, err := snapshot(ctx, r.cfg.Store, r.cfg.Label, func(ctx context.Context) (err error) {
		objs, err = r.listColumns(ctx, streamapi.ListQuery{Where: []streamapi.Cond{{Any: inGroup}}, Limit: limit + 1})
		return err
	})
	if err != nil {
		return 0, nil, fmt.Errorf("resource %s: read group %s: %w", r.cfg.Stream, group, err)
	}
	out, err := r.creates(objs, seq)
	return seq, out, err
}

// pkOf returns obj's primary key.
func (r *Resource[T]) pkOf(obj *T) any {
	return reflect.ValueOf(obj).Elem().FieldByIndex(r.pkIndex).Interface()
}

// creates returns objs as the create changes an event would carry,
// numbered seq.
func (r *Resource[T]) creates(objs []T, seq int64) ([]streamapi.Change, error) {
	out := make([]streamapi.Change, len(objs))
	for i := range objs {
		data, err := json.Marshal(&objs[i])
		if err != nil {
			return nil, fmt.Errorf("resource %s: %w", r.cfg.Stream, err)
		}
		out[i] = streamapi.Change{Model: r.cfg.Label, Action: streamapi.ChangeCreate, PK: streamapi.EncodePK(r.pkOf(&objs[i])), Data: data, Seq: seq}
	}
	return out, nil
}
