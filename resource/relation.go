package resource

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"sync"
	"time"

	"github.com/streamapi/streamapi"
)

// A Relation reads a membership resource as "user belongs to group": one
// row per (group, user), such as a board's members. Scopes that follow it
// (Includes) are applied in SQL for lists and lookups, as a semi-join on
// the membership table, and in memory for events, from an index of every
// membership row that the server loads at start and keeps in step with
// the membership model's change feed (exactly once, in seq order, on every
// node): authorizing an event costs no query. A user joining a group is
// sent, on each of their subscriptions, the group's objects entering view
// as creates; leaving it, their deletes (docs/auth.md).
//
// Build it with Membership, before the resources whose scopes use it are
// served. A Relation is safe for concurrent use.
type Relation struct {
	model    string
	table    streamapi.Table
	store    streamapi.Store
	groupCol string
	userCol  string
	// decode reads a membership row's JSON: its group key (canonical
	// JSON) and user ID; ok false when it has none (a null group).
	decode func(data json.RawMessage) (group, user string, ok bool)
	// all reads every membership row, as create changes.
	all func(ctx context.Context) ([]streamapi.Change, error)

	mu      sync.RWMutex
	rows    map[string]memberRow           // membership pk (canonical JSON) → row
	byUser  map[string]map[string]int32    // user → group → rows
	byGroup map[string]map[string]struct{} // group → membership pks
	last    applied                        // the change Apply took last
	noted   map[string]map[string]int64    // user ("" for the start) → model → seq
	notedAt map[string]time.Time           // user → when their last transition was noted
	grace   time.Duration                  // SetResumeGrace
	now     func() time.Time               // the clock of the grace (tests stop it)
}

type memberRow struct {
	group, user string
	data        json.RawMessage
}

type applied struct {
	seq int64
	ts  []streamapi.Transition
}

var _ streamapi.Relation = (*Relation)(nil)

// Membership declares r's objects as memberships: the field named group
// (its JSON name) holds the key of a group, and the field named user, a
// string, holds the ID of a user (streamapi.User.ID) who belongs to it.
// Index the table on (user, group): lists filter on it.
func Membership[M any](r *Resource[M], group, user string) (*Relation, error) {
	gf, uf := r.qfields[group], r.qfields[user]
	switch {
	case gf == nil:
		return nil, fmt.Errorf("resource %s: membership: no stored field %q (a JSON name)", r.cfg.Stream, group)
	case uf == nil:
		return nil, fmt.Errorf("resource %s: membership: no stored field %q (a JSON name)", r.cfg.Stream, user)
	}
	ut := uf.typ
	if ut.Kind() == reflect.Pointer {
		ut = ut.Elem()
	}
	if ut.Kind() != reflect.String {
		return nil, fmt.Errorf("resource %s: membership: user field %q must be a string, is %s", r.cfg.Stream, user, uf.typ)
	}
	key := func(obj *M) (g, u string, ok bool) {
		v := reflect.ValueOf(obj).Elem()
		gv, uv := v.FieldByIndex(gf.index), v.FieldByIndex(uf.index)
		if gv.Kind() == reflect.Pointer {
			if gv.IsNil() {
				return "", "", false
			}
			gv = gv.Elem()
		}
		if uv.Kind() == reflect.Pointer {
			if uv.IsNil() {
				return "", "", false
			}
			uv = uv.Elem()
		}
		if uv.String() == "" {
			return "", "", false // no user: the anonymous belong to nothing
		}
		return string(streamapi.EncodePK(gv.Interface())), uv.String(), true
	}
	rel := &Relation{
		model:    r.cfg.Label,
		table:    r.table,
		store:    r.cfg.Store,
		groupCol: gf.column,
		userCol:  uf.column,
		decode: func(data json.RawMessage) (string, string, bool) {
			obj := new(M)
			if len(data) == 0 || json.Unmarshal(data, obj) != nil {
				return "", "", false
			}
			return key(obj)
		},
		all: func(ctx context.Context) ([]streamapi.Change, error) {
			objs, err := r.listColumns(ctx, streamapi.ListQuery{})
			if err != nil {
				return nil, err
			}
			return r.creates(objs, 0)
		},
		rows:    map[string]memberRow{},
		byUser:  map[string]map[string]int32{},
		byGroup: map[string]map[string]struct{}{},
		noted:   map[string]map[string]int64{},
		notedAt: map[string]time.Time{},
		grace:   DefaultResumeGrace,
		now:     time.Now,
	}
	return rel, nil
}

// MustMembership is Membership that panics on error, for declarations.
func MustMembership[M any](r *Resource[M], group, user string) *Relation {
	rel, err := Membership(r, group, user)
	if err != nil {
		panic(err)
	}
	return rel
}

// Includes is the scope "the object's field (a JSON name) holds the key
// of a group u belongs to": a card's board, when rel is the board's
// members. An anonymous user (nil) belongs to no group. Combine it with
// And and Or like any Q.
func (rel *Relation) Includes(u *streamapi.User, field string) Q {
	if u == nil {
		return Nothing()
	}
	return Q{kind: qRel, rel: rel, filter: field, value: u.ID}
}

// Model implements streamapi.Relation.
func (rel *Relation) Model() string { return rel.model }

// Has reports whether user belongs to the group whose key is group
// (canonical JSON), as the index holds it.
func (rel *Relation) Has(user, group string) bool {
	rel.mu.RLock()
	defer rel.mu.RUnlock()
	return rel.byUser[user][group] > 0
}

// has is Has for a key in bytes, without allocating.
func (rel *Relation) has(user string, group []byte) bool {
	rel.mu.RLock()
	defer rel.mu.RUnlock()
	return rel.byUser[user][string(group)] > 0
}

// Groups returns the keys of the groups user belongs to, sorted.
func (rel *Relation) Groups(user string) []string {
	rel.mu.RLock()
	defer rel.mu.RUnlock()
	out := make([]string, 0, len(rel.byUser[user]))
	for g := range rel.byUser[user] {
		out = append(out, g)
	}
	sort.Strings(out)
	return out
}

// Len returns how many membership rows the index holds.
func (rel *Relation) Len() int {
	rel.mu.RLock()
	defer rel.mu.RUnlock()
	return len(rel.rows)
}

// Load implements streamapi.Relation: one read snapshot (when the store
// offers one) holds both the rows and the log's last seq.
func (rel *Relation) Load(ctx context.Context) (int64, error) {
	var rows []streamapi.Change
	seq, err := snapshot(ctx, rel.store, rel.model, func(ctx context.Context) (err error) {
		rows, err = rel.all(ctx)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("relation %s: load: %w", rel.model, err)
	}
	rel.mu.Lock()
	defer rel.mu.Unlock()
	rel.rows = map[string]memberRow{}
	rel.byUser = map[string]map[string]int32{}
	rel.byGroup = map[string]map[string]struct{}{}
	for _, c := range rows {
		if g, u, ok := rel.decode(c.Data); ok {
			rel.addLocked(string(c.PK), memberRow{group: g, user: u, data: c.Data})
		}
	}
	return seq, nil
}

func (rel *Relation) addLocked(pk string, row memberRow) (joined bool) {
	rel.rows[pk] = row
	gs := rel.byUser[row.user]
	if gs == nil {
		gs = map[string]int32{}
		rel.byUser[row.user] = gs
	}
	gs[row.group]++
	ps := rel.byGroup[row.group]
	if ps == nil {
		ps = map[string]struct{}{}
		rel.byGroup[row.group] = ps
	}
	ps[pk] = struct{}{}
	return gs[row.group] == 1
}

func (rel *Relation) removeLocked(pk string) (row memberRow, left bool) {
	row, ok := rel.rows[pk]
	if !ok {
		return row, false
	}
	delete(rel.rows, pk)
	gs := rel.byUser[row.user]
	gs[row.group]--
	if gs[row.group] <= 0 {
		delete(gs, row.group)
		left = true
		if len(gs) == 0 {
			delete(rel.byUser, row.user)
		}
	}
	if ps := rel.byGroup[row.group]; ps != nil {
		delete(ps, pk)
		if len(ps) == 0 {
			delete(rel.byGroup, row.group)
		}
	}
	return row, left
}

// snapshot runs read in one read transaction of store (when it offers
// one) and returns model's last seq in it (0 without a change log).
func snapshot(ctx context.Context, store streamapi.Store, model string, read func(ctx context.Context) error) (int64, error) {
	var seq int64
	fn := func(ctx context.Context) error {
		if cl, ok := store.(streamapi.ChangeLog); ok {
			_, last, err := cl.Bounds(ctx, model)
			if err != nil {
				return err
			}
			seq = last
		}
		return read(ctx)
	}
	if rt, ok := store.(streamapi.ReadTxer); ok {
		return seq, rt.ReadTx(ctx, fn)
	}
	return seq, fn(ctx)
}

// Apply implements streamapi.Relation.
func (rel *Relation) Apply(c *streamapi.Change) []streamapi.Transition {
	rel.mu.Lock()
	defer rel.mu.Unlock()
	ts := rel.applyLocked(c)
	rel.last = applied{seq: c.Seq, ts: ts}
	return ts
}

// Peek implements streamapi.Relation: Apply, then undone, under the
// index's write lock (readers wait the while).
func (rel *Relation) Peek(c *streamapi.Change) []streamapi.Transition {
	rel.mu.Lock()
	defer rel.mu.Unlock()
	pk := string(c.PK)
	prev, had := rel.rows[pk]
	ts := rel.applyLocked(c)
	// Undo: drop what c put, restore what it took.
	rel.removeLocked(pk)
	if had {
		rel.addLocked(pk, prev)
	}
	return ts
}

func (rel *Relation) applyLocked(c *streamapi.Change) []streamapi.Transition {
	pk := string(c.PK)
	var ts []streamapi.Transition
	if row, left := rel.removeLocked(pk); left {
		ts = append(ts, streamapi.Transition{User: row.user, Group: row.group})
	}
	if c.Action != streamapi.ChangeDelete {
		if g, u, ok := rel.decode(c.Data); ok {
			if rel.addLocked(pk, memberRow{group: g, user: u, data: c.Data}) {
				// Leaving and joining the same group is no transition.
				for i, t := range ts {
					if t.User == u && t.Group == g {
						return append(ts[:i], ts[i+1:]...)
					}
				}
				ts = append(ts, streamapi.Transition{User: u, Group: g, Joined: true})
			}
		}
	}
	return ts
}

// Rows implements streamapi.Relation.
func (rel *Relation) Rows(group string, seq int64) []streamapi.Change {
	rel.mu.RLock()
	defer rel.mu.RUnlock()
	pks := make([]string, 0, len(rel.byGroup[group]))
	for pk := range rel.byGroup[group] {
		pks = append(pks, pk)
	}
	sort.Strings(pks)
	out := make([]streamapi.Change, len(pks))
	for i, pk := range pks {
		out[i] = streamapi.Change{Model: rel.model, Action: streamapi.ChangeCreate, PK: json.RawMessage(pk), Data: rel.rows[pk].data, Seq: seq}
	}
	return out
}

// DefaultResumeGrace is a Relation's resume grace unless SetResumeGrace
// changes it.
const DefaultResumeGrace = 30 * time.Second

// SetResumeGrace sets how long after a user's join or leave, as this node
// handled it, a resume of theirs on a stream following the relation is
// answered 410 whatever its since (default DefaultResumeGrace): another
// node, whose delivery of the membership model lags behind its delivery
// of the others, may have given the client a seq past this node's cut
// while still showing the old view. Call it before serving.
func (rel *Relation) SetResumeGrace(d time.Duration) {
	rel.mu.Lock()
	defer rel.mu.Unlock()
	rel.grace = d
}

// Noted implements streamapi.Relation.
func (rel *Relation) Noted(user, model string, seq int64) {
	rel.mu.Lock()
	defer rel.mu.Unlock()
	m := rel.noted[user]
	if m == nil {
		m = map[string]int64{}
		rel.noted[user] = m
	}
	m[model] = max(m[model], seq)
	if user != "" {
		rel.notedAt[user] = rel.now()
	}
}

// ChangedAfter implements streamapi.Relation: true when a transition of
// user's was noted at or after since, or within the resume grace, or when
// since is from before the index started. The seq noted for a transition
// is where the cut delivered the model to: a client at that seq or before
// it saw the old view (or has not seen the burst), so the comparison
// includes it.
func (rel *Relation) ChangedAfter(user, model string, since int64) bool {
	rel.mu.RLock()
	defer rel.mu.RUnlock()
	if start, ok := rel.noted[""][model]; !ok || since < start {
		return true // before the index started: unknown
	}
	if at, ok := rel.notedAt[user]; ok && rel.now().Sub(at) < rel.grace {
		return true
	}
	seq, ok := rel.noted[user][model]
	return ok && seq >= since
}

// before returns the transitions of the membership change numbered seq
// when it is the one Apply took last: the self-scoped membership
// resource's own events evaluate "before" without them.
func (rel *Relation) before(seq int64) ([]streamapi.Transition, bool) {
	rel.mu.RLock()
	defer rel.mu.RUnlock()
	if seq == 0 || rel.last.seq != seq {
		return nil, false
	}
	return rel.last.ts, true
}
