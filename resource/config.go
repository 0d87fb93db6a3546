package resource

import (
	"context"
	"slices"

	"github.com/streamapi/streamapi"
)

// Config declares a resource of model T. Stream, Label and Store are
// required; everything else has a default.
type Config[T any] struct {
	// Stream is the name clients address, e.g. "questions".
	Stream string
	// Label is the model label events carry, "<app>.<model>".
	Label string
	// Store holds the objects.
	Store streamapi.Store

	// Actions lists the standard actions offered (streamapi.Action*
	// constants); nil offers them all. ReadOnly offers retrieve, list and
	// the subscriptions. Custom actions are always offered.
	Actions []string
	// Permission decides per (user, action, pk); nil uses the server's
	// default, itself AllowAny unless set.
	Permission streamapi.Permission
	// PageSize is the number of objects per list page; zero uses the
	// server's default (25 unless set).
	PageSize int
	// MaxPageSize caps the page size a client may ask for with
	// page_size; zero means 100 (or PageSize, if larger).
	MaxPageSize int

	// Filters declares the fields lists may be filtered on, by JSON name,
	// with the django-filter lookups each allows (streamapi.Lookup*), e.g.
	// {"votes": {"exact", "gte", "lte"}}. docs/queries.md.
	Filters map[string][]string
	// Ordering lists the fields lists may be ordered by (?ordering=-votes).
	Ordering []string
	// DefaultOrdering is the order when the client gives none, e.g.
	// {"-pub_date"}; the primary key always breaks ties.
	DefaultOrdering []string
	// Search lists the text fields ?search= looks in.
	Search []string

	// Scope restricts which objects a user sees, the counterpart of DRF's
	// per-user get_queryset: list, retrieve, update, patch, delete, custom
	// detail actions and subscriptions all apply it, and an object outside
	// it is 404, as one that does not exist. It returns a condition in the
	// list query language (Where, And, Or, All, Nothing), evaluated in SQL
	// for lists and in memory for events, so it must be a pure function of
	// the user (no I/O). Nil: everyone sees everything. docs/auth.md.
	Scope func(u *streamapi.User) Q

	// ObjectPermission decides per object, once the object is loaded and
	// found in the user's scope: the counterpart of DRF's
	// has_object_permission. It is asked for retrieve, update, patch,
	// delete and custom detail actions (action is the wire name), with the
	// object as stored before the action; false answers 403 (401 for an
	// anonymous user, who is passed as a nil u), where an object outside
	// the scope answers 404. Nil allows every object the scope lets the
	// user see.
	ObjectPermission func(ctx context.Context, u *streamapi.User, action string, obj *T) bool

	// Defaults fills in default values of a new object before the request's
	// data is applied. A required field it gives a value (not the zero
	// value) may be left out of a create, as a model field with a default
	// in DRF; an update (not a patch) still needs it.
	Defaults func(ctx context.Context, obj *T)
	// Validate runs after the field rules pass, for rules that need more
	// than one field or the database. Return FieldErrors.Err() (or any
	// *streamapi.Error). action is create, update or patch.
	Validate func(ctx context.Context, obj *T, action string) error
	// BeforeWrite runs in the write's transaction after validation, just
	// before the row is written (action create, update or patch): the
	// place for derived fields (a card's board follows its column) and for
	// checks of them. It runs on every write path: WebSocket, REST and the
	// typed Go methods Create and Update. An error aborts the write.
	BeforeWrite func(ctx context.Context, obj *T, action string) error
	// AfterWrite runs in the write's transaction once the row is written
	// (action create, update or patch): the place to keep dependent
	// objects in step, through their resources or tables, so that their
	// subscribers hear of it in the same commit. Like BeforeWrite, it runs
	// on every write path.
	AfterWrite func(ctx context.Context, obj *T, action string) error
	// BeforeDelete runs in the delete's transaction, before the row goes:
	// the place to delete dependent objects through their own resources,
	// so their subscribers hear about it too.
	BeforeDelete func(ctx context.Context, obj *T) error
	// LockFirst, when set, runs in the write transaction before the row of
	// the object pk is locked by a request (update, patch, delete, and
	// detail actions not Unlocked) or by Delete: to lock first what
	// writers lock before such objects (a card's column, before the card),
	// so that two writers never wait for each other in a cycle. Update and
	// UpdateWhere, server code's tools, do not run it. A row it reads
	// without a lock may change before it is locked: read it again under
	// the lock, and return streamapi.ErrRetry if it moved.
	LockFirst func(ctx context.Context, pk any) error

	// DetailActions are custom actions on one object.
	DetailActions []DetailAction[T]
	// ListActions are custom actions on the collection.
	ListActions []ListAction
}

// DetailAction is a custom action on one object, the counterpart of
// Channels API's @detail_action. The object is loaded (404 when it does not
// exist) and locked inside a write transaction that Func runs in, so a
// read-modify-write through the resource is atomic; a Safe action's runs
// in a read transaction instead (streamapi.ReadTxer), off the write path.
// Input decodes and checks its data.
type DetailAction[T any] struct {
	// Name is the action's name in Go (logs, docs), e.g. "Vote".
	Name string
	// WireName is its name on the wire, e.g. "vote"; Name when empty.
	WireName string
	// Func performs it. It returns the reply's data and status (0 means
	// 200), or an error, formatted like every other error.
	Func func(ctx context.Context, req *streamapi.Request, obj *T) (data any, status int, err error)
	// Safe declares that the action changes nothing: REST then serves it
	// on GET as well as POST, and it runs in a read transaction, where a
	// write fails.
	Safe bool
	// Unlocked makes the action read its object, in the write transaction,
	// without the row lock (and LockFirst) it otherwise takes first: for an
	// action that locks what it changes in an order of its own (a card's
	// two columns, then the card), the order the resource's other writers
	// take too (see LockFirst).
	Unlocked bool
}

// ListAction is a custom action on the collection, the counterpart of
// Channels API's @list_action. Func runs outside any transaction (open one
// with the store's Tx), a Safe one's in a read transaction.
type ListAction struct {
	Name     string
	WireName string
	Func     func(ctx context.Context, req *streamapi.Request) (data any, status int, err error)
	// Safe declares that the action changes nothing: REST then serves it
	// on GET as well as POST.
	Safe bool
}

func wireName(name, wire string) string {
	if wire != "" {
		return wire
	}
	return name
}

// AllActions lists every standard action.
var AllActions = []string{
	streamapi.ActionCreate, streamapi.ActionRetrieve, streamapi.ActionUpdate,
	streamapi.ActionPatch, streamapi.ActionDelete, streamapi.ActionList,
	streamapi.ActionSubscribe, streamapi.ActionUnsubscribe,
	streamapi.ActionSubscribeInstance, streamapi.ActionUnsubscribeInstance,
}

// ReadOnly lists the actions of a read-only resource, the counterpart of
// ReadOnlyResourceBinding: retrieve, list and the subscriptions.
var ReadOnly = []string{
	streamapi.ActionRetrieve, streamapi.ActionList,
	streamapi.ActionSubscribe, streamapi.ActionUnsubscribe,
	streamapi.ActionSubscribeInstance, streamapi.ActionUnsubscribeInstance,
}

func isStandard(action string) bool { return slices.Contains(AllActions, action) }
