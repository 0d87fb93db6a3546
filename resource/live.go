package resource

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sync"

	"github.com/streamapi/streamapi"
	"github.com/streamapi/streamapi/internal/livelist"
)

// Live lists (docs/protocol.md §6.2): the resource side. A live list is a
// parsed list query for one user, holding its window (livelist.Window)
// and, with with_count, its count. The server's fan-out finds the lists a
// change may touch (livelist.Index, on Conds) and calls Change on each, in
// seq order.

var (
	_ streamapi.LiveLister = (*Resource[struct{}])(nil)
)

// LiveList implements streamapi.LiveLister: query holds the parameters
// of a list request, validated as list validates them (400 naming the
// parameter), without page or cursor: a live list is the first
// page_size objects of its query.
func (r *Resource[T]) LiveList(ctx context.Context, u *streamapi.User, query json.RawMessage) (streamapi.LiveList, error) {
	if err := r.Authorize(ctx, u, streamapi.ActionList, nil); err != nil {
		return nil, err
	}
	p, err := paramsFromData(query)
	if err != nil {
		errs := streamapi.FieldErrors{}
		errs.Add("query", "Expected a dictionary of list parameters.")
		return nil, errs.Err()
	}
	errs := streamapi.FieldErrors{}
	for _, name := range []string{paramPage, paramCursor} {
		if _, ok := p[name]; ok {
			errs.Add(name, "A live list has no pages: it is the first page_size objects of its query.")
		}
	}
	if err := errs.Err(); err != nil {
		return nil, err
	}
	lq, err := r.parse(p)
	if err != nil {
		return nil, err
	}
	if lq.fields != nil {
		// The protocol's rule finds objects by pk: the results must
		// carry it.
		hasPK := false
		for _, f := range lq.fields {
			hasPK = hasPK || slicesEqual(f.index, r.pkIndex)
		}
		if !hasPK {
			errs.Add(paramFields, "A live list's fields must include the primary key.")
			return nil, errs.Err()
		}
	}
	scope, err := r.scopeFor(u)
	if err != nil {
		return nil, err
	}
	size := lq.pageSize
	if size <= 0 {
		size = r.limit()
	}
	size = min(size, r.maxPageSize())
	l := &liveList[T]{r: r, u: u, lq: lq, scope: scope, size: size}
	l.all = append(append([]streamapi.Cond(nil), lq.q.Where...), scope...)
	l.cmp = r.comparator(lq.q.Order)
	return l, nil
}

// liveChange is a change decoded once for every live list of its model.
type liveChange[T any] struct {
	r             *Resource[T]
	c             *streamapi.Change
	before, after *T
	visOnce       sync.Once
	vis           streamapi.Visibility
}

// DecodeLive implements streamapi.LiveLister. An object that does not
// decode is no object (fail closed, as Visibility does).
func (r *Resource[T]) DecodeLive(c *streamapi.Change) streamapi.LiveChange {
	decode := func(b json.RawMessage) *T {
		if len(b) == 0 {
			return nil
		}
		obj := new(T)
		if json.Unmarshal(b, obj) != nil {
			return nil
		}
		return obj
	}
	lc := &liveChange[T]{r: r, c: c}
	switch c.Action {
	case streamapi.ChangeCreate:
		lc.after = decode(c.Data)
	case streamapi.ChangeDelete:
		lc.before = decode(c.Data)
	default:
		lc.after = decode(c.Data)
		lc.before = decode(c.Before)
		if len(c.Before) == 0 {
			lc.before = lc.after
		}
	}
	return lc
}

func (lc *liveChange[T]) Change() *streamapi.Change { return lc.c }

func (lc *liveChange[T]) Value(after bool, column string) (any, bool) {
	obj := lc.before
	if after {
		obj = lc.after
	}
	if obj == nil {
		return nil, false
	}
	qf := lc.r.byColumn[column]
	if qf == nil && lc.r.pkField.column == column {
		qf = lc.r.pkField
	}
	if qf == nil {
		return nil, false
	}
	fv := reflect.ValueOf(obj).Elem().FieldByIndex(qf.index)
	if fv.Kind() == reflect.Pointer {
		if fv.IsNil() {
			return nil, false
		}
		fv = fv.Elem()
	}
	return fv.Interface(), true
}

// visible returns whether u could see the object before the change and
// can after it.
func (lc *liveChange[T]) visible(u *streamapi.User) (bool, bool) {
	if !lc.r.Scoped() {
		return true, true
	}
	lc.visOnce.Do(func() { lc.vis = lc.r.Visibility(lc.c) })
	return lc.vis(u)
}

// liveList is one live list of a Resource[T].
type liveList[T any] struct {
	r     *Resource[T]
	u     *streamapi.User
	lq    *listQuery
	scope []streamapi.Cond
	all   []streamapi.Cond // the query's conditions and the scope's: what SQL reads
	size  int
	cmp   func(a, b *T) int
	w     *livelist.Window[T]
	count int
}

func (l *liveList[T]) Conds() []streamapi.Cond { return l.all }

func (l *liveList[T]) Count() (int, bool) { return l.count, l.lq.withCount }

func (l *liveList[T]) pk(obj *T) string { return string(streamapi.EncodePK(l.r.pkOf(obj))) }

// Read implements streamapi.LiveList: the first size objects and the
// count, in one snapshot with the model's last seq.
func (l *liveList[T]) Read(ctx context.Context) (int64, func() streamapi.LiveUpdate, error) {
	var objs []T
	n := 0
	seq, err := snapshot(ctx, l.r.cfg.Store, l.r.cfg.Label, func(ctx context.Context) error {
		objs = make([]T, 0, l.size)
		if err := l.r.table.List(ctx, &objs, streamapi.ListQuery{Where: l.all, Order: l.lq.q.Order, Limit: l.size}); err != nil {
			return err
		}
		if l.lq.withCount {
			var err error
			n, err = l.r.table.Count(ctx, streamapi.ListQuery{Where: l.all})
			return err
		}
		return nil
	})
	if err != nil {
		return 0, nil, fmt.Errorf("resource %s: live list: %w", l.r.cfg.Stream, err)
	}
	install := func() streamapi.LiveUpdate {
		items := make([]*T, len(objs))
		for i := range objs {
			items[i] = &objs[i]
		}
		var up streamapi.LiveUpdate
		if l.w != nil {
			up.Events = l.diff(l.w.Items(), items)
		}
		l.w, _ = livelist.NewWindow(l.size, l.cmp, l.pk, items) // len(items) <= size >= 1
		up.CountChanged, up.Count = n != l.count, n
		l.count = n
		return up
	}
	return seq, install, nil
}

// diff returns the events that take a client holding old to new: deletes
// of what left, then each of new in order, unless already in place.
func (l *liveList[T]) diff(old, new []*T) []streamapi.LiveEvent {
	var evs []streamapi.LiveEvent
	keep := map[string]bool{}
	for _, o := range new {
		keep[l.pk(o)] = true
	}
	held := map[string]*T{}
	var cur []string // the client's list, as pks
	for _, o := range old {
		pk := l.pk(o)
		if !keep[pk] {
			evs = append(evs, l.event(streamapi.ChangeDelete, o, -1))
			continue
		}
		held[pk] = o
		cur = append(cur, pk)
	}
	for i, o := range new {
		pk := l.pk(o)
		was, ok := held[pk]
		if ok && i < len(cur) && cur[i] == pk && l.same(was, o) {
			continue
		}
		action := streamapi.ChangeCreate
		if ok {
			action = streamapi.ChangeUpdate
			for j, p := range cur {
				if p == pk {
					cur = append(cur[:j], cur[j+1:]...)
					break
				}
			}
		}
		cur = append(cur[:i], append([]string{pk}, cur[i:]...)...)
		evs = append(evs, l.event(action, o, i))
	}
	return evs
}

func (l *liveList[T]) same(a, b *T) bool {
	x, err1 := l.encode(a)
	y, err2 := l.encode(b)
	return err1 == nil && err2 == nil && string(x) == string(y)
}

// encode serialises obj as the list does (honouring fields).
func (l *liveList[T]) encode(obj *T) (json.RawMessage, error) {
	if l.lq.fields == nil {
		return json.Marshal(obj)
	}
	out, err := project([]T{*obj}, l.lq.fields)
	if err != nil {
		return nil, err
	}
	return out.([]json.RawMessage)[0], nil
}

func (l *liveList[T]) event(action string, obj *T, index int) streamapi.LiveEvent {
	data, err := l.encode(obj)
	if err != nil {
		data = json.RawMessage("null")
	}
	return streamapi.LiveEvent{Action: action, PK: streamapi.EncodePK(l.r.pkOf(obj)), Data: data, Index: index}
}

// Results implements streamapi.LiveList.
func (l *liveList[T]) Results() (json.RawMessage, error) {
	var items []*T
	if l.w != nil {
		items = l.w.Items()
	}
	objs := make([]T, len(items))
	for i, it := range items {
		objs[i] = *it
	}
	res, err := project(objs, l.lq.fields)
	if err != nil {
		return nil, err
	}
	return json.Marshal(res)
}

// MayRead implements streamapi.LiveList.
func (l *liveList[T]) MayRead(c streamapi.LiveChange) bool {
	return l.w != nil && l.w.MayRead(string(c.Change().PK))
}

// matches reports whether the list's user sees obj and the query
// selects it; vis is the scope's verdict.
func (l *liveList[T]) matches(obj *T, vis bool) bool {
	return obj != nil && vis && l.r.Match(obj, l.lq.q.Where)
}

// Change implements streamapi.LiveList. The count moves by the change's
// own match transition (exact at its seq); the window by
// livelist.Window, whose refill reads the store as it is now (it may be
// ahead of the change: the changes in between then arrive as updates).
func (l *liveList[T]) Change(ctx context.Context, lc streamapi.LiveChange) (streamapi.LiveUpdate, error) {
	c, ok := lc.(*liveChange[T])
	if !ok || l.w == nil {
		return streamapi.LiveUpdate{}, fmt.Errorf("resource %s: live list: a change of another resource", l.r.cfg.Stream)
	}
	vb, va := c.visible(l.u)
	bm, am := l.matches(c.before, vb), l.matches(c.after, va)
	var up streamapi.LiveUpdate
	if l.lq.withCount && bm != am {
		if am {
			l.count++
		} else {
			l.count--
		}
		up.CountChanged = true
	}
	up.Count = l.count
	var after *T
	if am {
		after = c.after
	}
	evs, err := l.w.Change(string(c.c.PK), after, func(a *T) (*T, error) { return l.next(ctx, a) })
	if err != nil {
		return streamapi.LiveUpdate{}, fmt.Errorf("resource %s: live list: %w", l.r.cfg.Stream, err)
	}
	for _, e := range evs {
		up.Events = append(up.Events, l.event(e.Action, e.Obj, e.Index))
	}
	return up, nil
}

// next reads the first object of the query, as the store holds it now,
// that is not in the window and sorts after after: one query of the
// first size+1 objects (the window's objects may sort anywhere in the
// store's current state, so a keyset after after alone would not do,
// and a keyset cannot step past NULLs).
func (l *liveList[T]) next(ctx context.Context, after *T) (*T, error) {
	in := map[string]bool{}
	for _, it := range l.w.Items() {
		in[l.pk(it)] = true
	}
	objs := make([]T, 0, l.size+1)
	if err := l.r.table.List(ctx, &objs, streamapi.ListQuery{Where: l.all, Order: l.lq.q.Order, Limit: l.size + 1}); err != nil {
		return nil, err
	}
	for i := range objs {
		o := &objs[i]
		if in[l.pk(o)] || after != nil && l.cmp(o, after) <= 0 {
			continue
		}
		return o, nil
	}
	return nil, nil
}

// comparator returns the order of a list, as the store sorts: by the
// ordering's fields (text byte by byte, NULLs first ascending), then the
// primary key ascending unless the ordering has it.
func (r *Resource[T]) comparator(order []streamapi.Order) func(a, b *T) int {
	type key struct {
		index []int
		desc  bool
	}
	var keys []key
	hasPK := false
	for _, o := range order {
		qf := r.byColumn[o.Column]
		if qf == nil && r.pkField.column == o.Column {
			qf = r.pkField
		}
		if qf == nil {
			continue
		}
		keys = append(keys, key{qf.index, o.Desc})
		hasPK = hasPK || slicesEqual(qf.index, r.pkIndex)
	}
	if !hasPK {
		keys = append(keys, key{r.pkIndex, false})
	}
	return func(a, b *T) int {
		av, bv := reflect.ValueOf(a).Elem(), reflect.ValueOf(b).Elem()
		for _, k := range keys {
			c := compareFields(av.FieldByIndex(k.index), bv.FieldByIndex(k.index))
			if k.desc {
				c = -c
			}
			if c != 0 {
				return c
			}
		}
		return 0
	}
}

// compareFields compares two values of one field: NULL (a nil pointer)
// before any value.
func compareFields(a, b reflect.Value) int {
	if a.Kind() == reflect.Pointer {
		switch {
		case a.IsNil() && b.IsNil():
			return 0
		case a.IsNil():
			return -1
		case b.IsNil():
			return 1
		}
		a, b = a.Elem(), b.Elem()
	}
	return compareValues(a, b.Interface())
}
