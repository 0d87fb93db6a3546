package resource

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-playground/validator/v10"
	"github.com/streamapi/streamapi"
)

// Resource is a declared resource of model T. It implements
// streamapi.Resource for the server, and offers a typed Go API (Get,
// Create, Update, Delete, List) whose writes publish events like any other.
type Resource[T any] struct {
	cfg      Config[T]
	table    streamapi.Table
	fields   []field
	pkIndex  []int
	validate *validator.Validate
	actions  []string
	detail   map[string]*DetailAction[T]
	list     map[string]*ListAction
	perm     streamapi.Permission
	pageSize int
	qfields  map[string]*queryField // by JSON name: the fields the query language may name
	byColumn map[string]*queryField // the same, by SQL column
	hidden   map[string]bool        // columns of fields with no JSON name (json:"-"): List names them by column
	pkField  *queryField            // the primary key, for sorting and cursors
	qlimits  streamapi.QueryLimits
	relOnce  sync.Once
	rels     map[*Relation][]string // the relations the scope follows, with the fields naming them
}

var _ streamapi.Resource = (*Resource[struct{}])(nil)

// New declares a resource. It fails when the configuration is incomplete or
// the model has no usable primary key.
func New[T any](cfg Config[T]) (*Resource[T], error) {
	var zero T
	t := reflect.TypeOf(zero)
	if t == nil || t.Kind() != reflect.Struct {
		return nil, fmt.Errorf("resource: model must be a struct type, got %T", zero)
	}
	switch {
	case cfg.Stream == "":
		return nil, errors.New("resource: Stream is required")
	case cfg.Label == "":
		return nil, fmt.Errorf("resource %s: Label is required (\"<app>.<model>\")", cfg.Stream)
	case cfg.Store == nil:
		return nil, fmt.Errorf("resource %s: Store is required", cfg.Stream)
	case cfg.PageSize < 0:
		return nil, fmt.Errorf("resource %s: PageSize must not be negative", cfg.Stream)
	}
	table, err := cfg.Store.Table((*T)(nil), cfg.Label)
	if err != nil {
		return nil, fmt.Errorf("resource %s: %w", cfg.Stream, err)
	}
	r := &Resource[T]{
		cfg:      cfg,
		table:    table,
		validate: validator.New(validator.WithRequiredStructEnabled()),
		detail:   make(map[string]*DetailAction[T]),
		list:     make(map[string]*ListAction),
		perm:     cfg.Permission,
		pageSize: cfg.PageSize,
		qlimits:  streamapi.QueryLimits{}.WithDefaults(),
	}
	r.pkIndex, err = pkIndex(t)
	if err != nil {
		return nil, fmt.Errorf("resource %s: %w", cfg.Stream, err)
	}
	if r.fields, err = fields(t, r.pkIndex); err != nil {
		return nil, fmt.Errorf("resource %s: %w", cfg.Stream, err)
	}
	if err := r.initQuery(); err != nil {
		return nil, err
	}
	if _, err := r.probeScope(); err != nil {
		return nil, err
	}
	r.actions = cfg.Actions
	if r.actions == nil {
		r.actions = AllActions
	}
	for _, a := range r.actions {
		if !isStandard(a) {
			return nil, fmt.Errorf("resource %s: unknown standard action %q in Actions", cfg.Stream, a)
		}
	}
	for i := range cfg.DetailActions {
		a := &cfg.DetailActions[i]
		if err := r.addCustom(wireName(a.Name, a.WireName), a.Func == nil); err != nil {
			return nil, err
		}
		r.detail[wireName(a.Name, a.WireName)] = a
	}
	for i := range cfg.ListActions {
		a := &cfg.ListActions[i]
		if err := r.addCustom(wireName(a.Name, a.WireName), a.Func == nil); err != nil {
			return nil, err
		}
		r.list[wireName(a.Name, a.WireName)] = a
	}
	return r, nil
}

func (r *Resource[T]) addCustom(name string, noFunc bool) error {
	switch {
	case name == "":
		return fmt.Errorf("resource %s: a custom action has no name", r.cfg.Stream)
	case noFunc:
		return fmt.Errorf("resource %s: custom action %q has no Func", r.cfg.Stream, name)
	case isStandard(name):
		return fmt.Errorf("resource %s: custom action %q shadows a standard action", r.cfg.Stream, name)
	case r.detail[name] != nil || r.list[name] != nil:
		return fmt.Errorf("resource %s: custom action %q declared twice", r.cfg.Stream, name)
	}
	return nil
}

// pkIndex finds the primary key field: the one with bun's ",pk" option.
func pkIndex(t reflect.Type) ([]int, error) {
	for _, f := range reflect.VisibleFields(t) {
		opts := strings.Split(f.Tag.Get("bun"), ",")
		if len(opts) > 1 && slices.Contains(opts[1:], "pk") {
			return f.Index, nil
		}
	}
	return nil, fmt.Errorf("model %s has no primary key field (bun:\",pk\")", t)
}

// Stream returns the stream name.
func (r *Resource[T]) Stream() string { return r.cfg.Stream }

// Model returns the model label.
func (r *Resource[T]) Model() string { return r.cfg.Label }

// Table returns the store table, for queries the typed API does not cover.
func (r *Resource[T]) Table() streamapi.Table { return r.table }

// Init applies server defaults to unset settings.
func (r *Resource[T]) Init(d streamapi.Defaults) {
	if r.cfg.Permission == nil {
		r.perm = d.Permission
	}
	if r.cfg.PageSize == 0 {
		r.pageSize = d.PageSize
	}
	r.qlimits = d.Query.WithDefaults()
}

func (r *Resource[T]) permission() streamapi.Permission {
	if r.perm == nil {
		return streamapi.AllowAny
	}
	return r.perm
}

func (r *Resource[T]) limit() int {
	if r.pageSize <= 0 {
		return streamapi.DefaultPageSize
	}
	return r.pageSize
}

// Authorize checks the permission, then that the action is offered:
// PermissionDenied, or ErrInvalidAction.
func (r *Resource[T]) Authorize(ctx context.Context, u *streamapi.User, action string, pk any) error {
	if !r.permission().HasPermission(ctx, u, action, pk) {
		return streamapi.PermissionDenied(u)
	}
	if !r.offers(action) {
		return streamapi.ErrInvalidAction
	}
	return nil
}

// Offers reports whether the resource offers action.
func (r *Resource[T]) Offers(action string) bool { return r.offers(action) }

// CustomActions lists the custom actions, detail ones first, each group in
// declaration order.
func (r *Resource[T]) CustomActions() []streamapi.ActionInfo {
	out := make([]streamapi.ActionInfo, 0, len(r.cfg.DetailActions)+len(r.cfg.ListActions))
	for _, a := range r.cfg.DetailActions {
		out = append(out, streamapi.ActionInfo{Name: wireName(a.Name, a.WireName), Detail: true, Safe: a.Safe})
	}
	for _, a := range r.cfg.ListActions {
		out = append(out, streamapi.ActionInfo{Name: wireName(a.Name, a.WireName), Safe: a.Safe})
	}
	return out
}

// ListPage answers a list made with query parameters (REST).
func (r *Resource[T]) ListPage(ctx context.Context, req *streamapi.Request, query map[string][]string) (streamapi.Page, error) {
	if err := r.Authorize(ctx, req.User, streamapi.ActionList, nil); err != nil {
		return streamapi.Page{}, err
	}
	lq, err := r.parse(paramsFromQuery(query))
	if err != nil {
		return streamapi.Page{}, err
	}
	if err := r.applyScope(lq, req.User); err != nil {
		return streamapi.Page{}, err
	}
	return r.listPage(ctx, lq, true)
}

// applyScope adds u's scope to a list's conditions.
func (r *Resource[T]) applyScope(lq *listQuery, u *streamapi.User) error {
	conds, err := r.scopeFor(u)
	if err != nil {
		return err
	}
	lq.q.Where = append(lq.q.Where, conds...)
	return nil
}

// listPage runs a parsed list: one page by number or by cursor. With
// counted, a numbered page also carries the count (and HasNext), one more
// query; without, a page past the last is still refused, by its being
// empty.
func (r *Resource[T]) listPage(ctx context.Context, lq *listQuery, counted bool) (streamapi.Page, error) {
	size := lq.pageSize
	if size <= 0 {
		size = r.limit()
	}
	size = min(size, r.maxPageSize())
	if lq.cursor != nil {
		if name := r.nullableSort(lq); name != "" {
			errs := streamapi.FieldErrors{}
			errs.Add(paramCursor, fmt.Sprintf("Cursor pagination cannot order by the nullable field %q.", name))
			return streamapi.Page{}, errs.Err()
		}
		if *lq.cursor != "" {
			if err := r.readCursor(lq, *lq.cursor); err != nil {
				return streamapi.Page{}, err
			}
		}
		q := lq.q
		q.Limit = size + 1 // one more, to know whether a page follows
		objs := make([]T, 0, size+1)
		if err := r.table.List(ctx, &objs, q); err != nil {
			return streamapi.Page{}, err
		}
		p := streamapi.Page{Cursor: true}
		if len(objs) > size {
			objs = objs[:size]
			p.NextCursor = r.makeCursor(&objs[size-1], lq)
		}
		res, err := project(objs, lq.fields)
		p.Results = res
		return p, err
	}
	var count int
	if counted {
		var err error
		if count, err = r.table.Count(ctx, streamapi.ListQuery{Where: lq.q.Where}); err != nil {
			return streamapi.Page{}, err
		}
		// As DRF's validate_number: no page past the last.
		if last := max(1, (count+size-1)/size); lq.page > last {
			return streamapi.Page{}, streamapi.ErrInvalidPage
		}
	} else if lq.page-1 > math.MaxInt/size {
		// An offset that would overflow: past any last page.
		return streamapi.Page{}, streamapi.ErrInvalidPage
	}
	q := lq.q
	q.Offset, q.Limit = (lq.page-1)*size, size
	objs := make([]T, 0, size)
	if err := r.table.List(ctx, &objs, q); err != nil {
		return streamapi.Page{}, err
	}
	if len(objs) == 0 && lq.page > 1 {
		return streamapi.Page{}, streamapi.ErrInvalidPage
	}
	res, err := project(objs, lq.fields)
	return streamapi.Page{Results: res, Number: lq.page, Count: count, HasNext: lq.page*size < count}, err
}

func (r *Resource[T]) maxPageSize() int {
	if r.cfg.MaxPageSize > 0 {
		return r.cfg.MaxPageSize
	}
	return max(100, r.limit())
}

func (r *Resource[T]) offers(action string) bool {
	if isStandard(action) {
		return slices.Contains(r.actions, action)
	}
	return r.detail[action] != nil || r.list[action] != nil
}

// ParsePK converts a wire pk to the key type: an integer key accepts 7 and
// "7"; a string key accepts any string or number. Anything else is
// ErrNotFound, as Django's lookup of a malformed pk is.
func (r *Resource[T]) ParsePK(raw json.RawMessage) (any, error) {
	if len(raw) == 0 {
		return nil, streamapi.ErrNotFound
	}
	typ := r.table.PKType()
	text := string(raw)
	if raw[0] == '"' {
		if err := json.Unmarshal(raw, &text); err != nil {
			return nil, streamapi.ErrNotFound
		}
	} else if raw[0] != '-' && (raw[0] < '0' || raw[0] > '9') {
		return nil, streamapi.ErrNotFound
	}
	switch {
	case typ.Kind() == reflect.String:
		return reflect.ValueOf(text).Convert(typ).Interface(), nil
	case isIntKind(typ):
		text = strings.TrimSpace(text) // as Python's int() and the field decoder do
		v := reflect.New(typ).Elem()
		if strings.HasPrefix(typ.Kind().String(), "uint") {
			n, err := strconv.ParseUint(text, 10, typ.Bits())
			if err != nil {
				return nil, streamapi.ErrNotFound
			}
			v.SetUint(n)
		} else {
			n, err := strconv.ParseInt(text, 10, typ.Bits())
			if err != nil {
				return nil, streamapi.ErrNotFound
			}
			v.SetInt(n)
		}
		return v.Interface(), nil
	}
	return nil, fmt.Errorf("resource %s: unsupported primary key type %s", r.cfg.Stream, typ)
}

// Exists reports whether the object with key pk exists and the context's
// user (streamapi.UserFrom) may see it.
func (r *Resource[T]) Exists(ctx context.Context, pk any) (bool, error) {
	_, err := r.getVisible(ctx, streamapi.UserFrom(ctx), pk)
	if streamapi.ErrorCode(err) == streamapi.ENOTFOUND {
		return false, nil
	}
	return err == nil, err
}

// Serve answers a request for any action but the subscriptions.
func (r *Resource[T]) Serve(ctx context.Context, req *streamapi.Request) streamapi.Reply {
	var pk any
	var pkErr error
	if req.PK != nil {
		pk, pkErr = r.ParsePK(req.PK)
	}
	if err := r.Authorize(ctx, req.User, req.Action, pk); err != nil {
		return streamapi.Reply{Err: err}
	}
	needsPK := r.detail[req.Action] != nil
	switch req.Action {
	case streamapi.ActionRetrieve, streamapi.ActionUpdate, streamapi.ActionPatch, streamapi.ActionDelete:
		needsPK = true
	}
	if needsPK && (req.PK == nil || pkErr != nil) {
		return streamapi.Reply{Err: streamapi.ErrNotFound}
	}
	switch req.Action {
	case streamapi.ActionCreate:
		obj, err := r.create(ctx, req.Data)
		return reply(obj, 201, err)
	case streamapi.ActionRetrieve:
		obj, err := r.getVisible(ctx, req.User, pk)
		if err == nil {
			err = r.objectAllowed(ctx, req.User, req.Action, obj)
		}
		return reply(obj, 200, err)
	case streamapi.ActionUpdate, streamapi.ActionPatch:
		obj, err := r.change(ctx, req.User, pk, req.Data, req.Action)
		return reply(obj, 200, err)
	case streamapi.ActionDelete:
		err := r.cfg.Store.Tx(ctx, func(ctx context.Context) error {
			obj, err := r.lockVisible(ctx, req.User, pk)
			if err != nil {
				return err
			}
			if err := r.objectAllowed(ctx, req.User, req.Action, obj); err != nil {
				return err
			}
			return r.Delete(ctx, pk)
		})
		return reply(struct{}{}, 200, err)
	case streamapi.ActionList:
		return r.serveList(ctx, req)
	}
	if a := r.detail[req.Action]; a != nil {
		var data any
		var status int
		tx, load := r.cfg.Store.Tx, r.lockVisible
		if a.Unlocked {
			load = r.getVisible
		}
		if rt, ok := r.cfg.Store.(streamapi.ReadTxer); ok && a.Safe {
			tx, load = rt.ReadTx, r.getVisible
		}
		err := tx(ctx, func(ctx context.Context) error {
			obj, err := load(ctx, req.User, pk)
			if err != nil {
				return err
			}
			if err := r.objectAllowed(ctx, req.User, req.Action, obj); err != nil {
				return err
			}
			data, status, err = a.Func(ctx, req, obj)
			return err
		})
		return reply(data, status, err)
	}
	if a := r.list[req.Action]; a != nil {
		var data any
		var status int
		run := func(ctx context.Context) error {
			var err error
			data, status, err = a.Func(ctx, req)
			return err
		}
		var err error
		if rt, ok := r.cfg.Store.(streamapi.ReadTxer); ok && a.Safe {
			err = rt.ReadTx(ctx, run)
		} else {
			err = run(ctx)
		}
		return reply(data, status, err)
	}
	// Subscription actions never reach Serve; the server handles them.
	return streamapi.Reply{Err: streamapi.ErrInvalidAction}
}

func reply(data any, status int, err error) streamapi.Reply {
	if err != nil {
		return streamapi.Reply{Err: err}
	}
	if status == 0 {
		status = 200
	}
	return streamapi.Reply{Status: status, Data: data}
}

// serveList answers a WebSocket list: a plain array of the page, as the
// original; with "with_count": true, {"count", "next", "previous",
// "results"} with page numbers; with "cursor", {"next", "results"}.
func (r *Resource[T]) serveList(ctx context.Context, req *streamapi.Request) streamapi.Reply {
	p, err := paramsFromData(req.Data)
	if err != nil {
		return streamapi.Reply{Err: err}
	}
	lq, err := r.parse(p)
	if err != nil {
		return streamapi.Reply{Err: err}
	}
	if err := r.applyScope(lq, req.User); err != nil {
		return streamapi.Reply{Err: err}
	}
	// The plain array needs no count: DRF counts to refuse a page past the
	// last, which an empty page past the first shows as well.
	page, err := r.listPage(ctx, lq, lq.withCount)
	if err != nil {
		return streamapi.Reply{Err: err}
	}
	switch {
	case page.Cursor:
		var next *string
		if page.NextCursor != "" {
			next = &page.NextCursor
		}
		return reply(map[string]any{"next": next, "results": page.Results}, 200, nil)
	case lq.withCount:
		var next, prev *int
		if page.HasNext {
			n := page.Number + 1
			next = &n
		}
		if page.Number > 1 {
			n := page.Number - 1
			prev = &n
		}
		return reply(map[string]any{"count": page.Count, "next": next, "previous": prev, "results": page.Results}, 200, nil)
	}
	return reply(page.Results, 200, nil)
}

// create builds a new object from data: defaults, then fields, then rules,
// in the write's transaction, so that what Validate reads (a related row)
// cannot change before the insert commits, and anew if the transaction
// runs again after a conflict.
func (r *Resource[T]) create(ctx context.Context, data json.RawMessage) (*T, error) {
	var obj *T
	err := r.cfg.Store.Tx(ctx, func(ctx context.Context) error {
		obj = new(T)
		if r.cfg.Defaults != nil {
			r.cfg.Defaults(ctx, obj)
		}
		errs, err := decodeData(r.fields, reflect.ValueOf(obj).Elem(), data, false, false)
		if err != nil {
			return err
		}
		return r.write(ctx, obj, streamapi.ActionCreate, errs)
	})
	if err != nil {
		return nil, err
	}
	return obj, nil
}

// change applies data to the stored object in one transaction: all
// required fields for update, only those sent for patch.
func (r *Resource[T]) change(ctx context.Context, u *streamapi.User, pk any, data json.RawMessage, action string) (*T, error) {
	var obj *T
	err := r.cfg.Store.Tx(ctx, func(ctx context.Context) error {
		var err error
		if obj, err = r.lockVisible(ctx, u, pk); err != nil {
			return err
		}
		if err := r.objectAllowed(ctx, u, action, obj); err != nil {
			return err
		}
		partial := action == streamapi.ActionPatch
		errs, err := decodeData(r.fields, reflect.ValueOf(obj).Elem(), data, partial, true)
		if err != nil {
			return err
		}
		return r.write(ctx, obj, action, errs)
	})
	return obj, err
}

// write is every write path's tail, inside the write's transaction: the
// field rules and Validate (check), BeforeWrite, the insert or update,
// AfterWrite.
func (r *Resource[T]) write(ctx context.Context, obj *T, action string, errs streamapi.FieldErrors) error {
	if err := r.check(ctx, obj, action, errs); err != nil {
		return err
	}
	if r.cfg.BeforeWrite != nil {
		if err := r.cfg.BeforeWrite(ctx, obj, action); err != nil {
			return err
		}
	}
	var err error
	if action == streamapi.ActionCreate {
		err = r.table.Insert(ctx, obj)
	} else {
		err = r.table.Update(ctx, obj)
	}
	if err != nil {
		return err
	}
	if r.cfg.AfterWrite != nil {
		return r.cfg.AfterWrite(ctx, obj, action)
	}
	return nil
}

// objectAllowed asks ObjectPermission about obj: PermissionDenied when it
// refuses.
func (r *Resource[T]) objectAllowed(ctx context.Context, u *streamapi.User, action string, obj *T) error {
	if r.cfg.ObjectPermission != nil && !r.cfg.ObjectPermission(ctx, u, action, obj) {
		return streamapi.PermissionDenied(u)
	}
	return nil
}

// Check implements streamapi.Checker: the store checks that the model's
// table exists with a column for every field (a store that cannot check
// passes).
func (r *Resource[T]) Check(ctx context.Context) error {
	if c, ok := r.table.(streamapi.Checker); ok {
		if err := c.Check(ctx); err != nil {
			return fmt.Errorf("resource %s: %w", r.cfg.Stream, err)
		}
	}
	return nil
}

// Get loads the object with key pk; ENOTFOUND when there is none.
func (r *Resource[T]) Get(ctx context.Context, pk any) (*T, error) {
	obj := new(T)
	if err := r.table.Get(ctx, obj, pk); err != nil {
		return nil, err
	}
	return obj, nil
}

// List loads one page of objects, in q's Order and then primary key order.
// q names fields as the wire does, by their JSON names ("question", not
// the column "question_id"; "pk" is the primary key), in Equal, Where
// and Order; a field the wire never shows (json:"-") goes by its column.
// A name the resource does not have is an EINVALID error naming it.
func (r *Resource[T]) List(ctx context.Context, q streamapi.ListQuery) ([]T, error) {
	q, err := r.byNames(q)
	if err != nil {
		return nil, err
	}
	return r.listColumns(ctx, q)
}

// listColumns is List with q in SQL columns.
func (r *Resource[T]) listColumns(ctx context.Context, q streamapi.ListQuery) ([]T, error) {
	objs := make([]T, 0, q.Limit)
	err := r.table.List(ctx, &objs, q)
	return objs, err
}

// byNames returns q with its JSON names turned into SQL columns.
func (r *Resource[T]) byNames(q streamapi.ListQuery) (streamapi.ListQuery, error) {
	col := func(name string) (string, error) {
		if f := r.qfields[name]; f != nil {
			return f.column, nil
		}
		if name == "pk" {
			return r.pkField.column, nil
		}
		if r.hidden[name] {
			return name, nil
		}
		names := make([]string, 0, len(r.qfields))
		for n := range r.qfields {
			names = append(names, n)
		}
		sort.Strings(names)
		return "", streamapi.Errorf(streamapi.EINVALID, "resource %s: the query names %q, which is not a stored field (fields go by their JSON names: %s)", r.cfg.Stream, name, strings.Join(names, ", "))
	}
	out := q
	if len(q.Equal) > 0 {
		out.Equal = make(map[string]any, len(q.Equal))
		for name, v := range q.Equal {
			c, err := col(name)
			if err != nil {
				return q, err
			}
			out.Equal[c] = v
		}
	}
	var conds func(cs []streamapi.Cond) ([]streamapi.Cond, error)
	conds = func(cs []streamapi.Cond) ([]streamapi.Cond, error) {
		if cs == nil {
			return nil, nil
		}
		res := make([]streamapi.Cond, len(cs))
		for i, c := range cs {
			var err error
			if c.All, err = conds(c.All); err != nil {
				return nil, err
			}
			if c.Any, err = conds(c.Any); err != nil {
				return nil, err
			}
			if c.Column != "" {
				if c.Column, err = col(c.Column); err != nil {
					return nil, err
				}
			}
			res[i] = c
		}
		return res, nil
	}
	var err error
	if out.Where, err = conds(q.Where); err != nil {
		return q, err
	}
	if len(q.Order) > 0 {
		out.Order = make([]streamapi.Order, len(q.Order))
		for i, o := range q.Order {
			if o.Column, err = col(o.Column); err != nil {
				return q, err
			}
			out.Order[i] = o
		}
	}
	return out, nil
}

// Create stores obj as a create over the socket would, in one write
// transaction (the caller's, when ctx carries one): the field rules,
// Validate, BeforeWrite, the insert, AfterWrite. Subscribers get a create
// event after commit. No user is involved: scope and permissions are the
// caller's to check. obj is filled in with the stored object (its key).
func (r *Resource[T]) Create(ctx context.Context, obj *T) error {
	return r.writeTx(ctx, obj, streamapi.ActionCreate)
}

// Update writes obj over the stored object with its key as an update over
// the socket would, in one write transaction: the field rules, Validate,
// BeforeWrite, the update, AfterWrite. Only the columns obj changes are
// written: those that differ from what this transaction read of the row
// (Get or Lock with ctx inside the same Tx), or, for an object read
// elsewhere, from the row as it is. Subscribers get an update event after
// commit.
func (r *Resource[T]) Update(ctx context.Context, obj *T) error {
	return r.writeTx(ctx, obj, streamapi.ActionUpdate)
}

// writeTx runs write in a transaction, each run of it (Tx runs it again
// after a conflict) from obj as the caller passed it.
func (r *Resource[T]) writeTx(ctx context.Context, obj *T, action string) error {
	orig := *obj
	return r.cfg.Store.Tx(ctx, func(ctx context.Context) error {
		*obj = orig
		return r.write(ctx, obj, action, nil)
	})
}

// Delete removes the object with key pk, running BeforeDelete in the same
// transaction; subscribers get a delete event carrying the object as it was.
func (r *Resource[T]) Delete(ctx context.Context, pk any) error {
	return r.cfg.Store.Tx(ctx, func(ctx context.Context) error {
		if err := r.lockFirst(ctx, pk); err != nil {
			return err
		}
		obj := new(T)
		if err := r.table.Lock(ctx, obj, pk); err != nil {
			return err
		}
		if r.cfg.BeforeDelete != nil {
			if err := r.cfg.BeforeDelete(ctx, obj); err != nil {
				return err
			}
		}
		return r.table.Delete(ctx, obj)
	})
}

// normalTimes stores every time field in UTC to the microsecond, as
// PostgreSQL keeps it, so that what a client is sent is what it reads back
// and filters compare alike on every store.
func normalTimes(v reflect.Value, fs []field) {
	for i := range fs {
		fv := v.FieldByIndex(fs[i].index)
		switch {
		case fv.Type() == timeType:
			fv.Set(reflect.ValueOf(normalTime(fv.Interface().(time.Time))))
		case fv.Kind() == reflect.Pointer && fv.Type().Elem() == timeType && !fv.IsNil():
			t := normalTime(fv.Elem().Interface().(time.Time))
			fv.Set(reflect.ValueOf(&t))
		}
	}
}

// check runs the field rules over every writable field not already in
// errs (the decoding errors, which it adds to), then the Validate hook.
func (r *Resource[T]) check(ctx context.Context, obj *T, action string, errs streamapi.FieldErrors) error {
	v := reflect.ValueOf(obj).Elem()
	normalTimes(v, r.fields)
	if err := checkFields(r.validate, r.fields, v, errs); err != nil {
		return err
	}
	if r.cfg.Validate != nil {
		return r.cfg.Validate(ctx, obj, action)
	}
	return nil
}

// checkFields runs the field rules over every writable field of v not
// already in errs (decoding errors, which it adds to): text a database
// cannot store, blank required strings, the validate tags. It returns the
// EINVALID error holding every message, element messages in Items, or nil.
func checkFields(validate *validator.Validate, fs []field, v reflect.Value, errs streamapi.FieldErrors) error {
	if errs == nil {
		errs = streamapi.FieldErrors{}
	}
	var items map[string]map[string][]string // element messages (dive rules)
	for i := range fs {
		f := &fs[i]
		if f.readOnly || errs[f.name] != nil {
			continue
		}
		fv := v.FieldByIndex(f.index)
		// Text no database stores as given (PostgreSQL refuses NUL, and
		// invalid UTF-8): a 400 naming the field, not the driver's 500.
		if msg := badTextIn(fv); msg != "" {
			errs.Add(f.name, msg)
			continue
		}
		// Presence is checked when decoding; in a Go value only a blank
		// string is recognisably missing.
		if f.required && f.typ.Kind() == reflect.String && strings.TrimSpace(fv.String()) == "" {
			errs.Add(f.name, "This field may not be blank.")
			continue
		}
		if f.rules == "" {
			continue
		}
		err := validate.Var(fv.Interface(), f.rules)
		if err == nil {
			continue
		}
		for _, m := range ruleMessages(err) {
			if m.item == "" {
				errs.Add(f.name, m.text)
				continue
			}
			if items == nil {
				items = map[string]map[string][]string{}
			}
			if items[f.name] == nil {
				items[f.name] = map[string][]string{}
			}
			items[f.name][m.item] = append(items[f.name][m.item], m.text)
		}
	}
	if len(items) > 0 {
		return &streamapi.Error{Code: streamapi.EINVALID, Fields: errs, Items: items}
	}
	return errs.Err()
}
