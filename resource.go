package streamapi

import (
	"context"
	"encoding/json"
)

// Resource is what the WebSocket (and REST) surfaces need from a resource
// declared with package resource. Applications rarely implement it by hand.
type Resource interface {
	// Stream returns the stream name clients address.
	Stream() string
	// Model returns the model label carried by events, e.g. "polls.question".
	Model() string
	// Init applies server-wide defaults to settings the resource left unset.
	// The server calls it once when the resource is mounted.
	Init(d Defaults)
	// Serve answers every action except the subscription actions, which the
	// server handles itself after asking Authorize and ParsePK.
	Serve(ctx context.Context, req *Request) Reply
	// Authorize returns PermissionDenied(u) unless u may perform action on pk.
	Authorize(ctx context.Context, u *User, action string, pk any) error
	// ParsePK converts a pk from the wire to the resource's key type,
	// returning ErrNotFound when it cannot (a pk of the wrong type).
	ParsePK(raw json.RawMessage) (any, error)
	// Exists reports whether the object with the given key exists.
	Exists(ctx context.Context, pk any) (bool, error)
	// Offers reports whether the resource offers action (a standard
	// action or a custom one's wire name).
	Offers(action string) bool
	// CustomActions lists the custom actions, for surfaces that route by
	// them (REST).
	CustomActions() []ActionInfo
	// ListPage answers a list request made with query parameters (REST's
	// query string): filters, ordering, search, fields, and a page number
	// or a cursor. docs/queries.md.
	ListPage(ctx context.Context, req *Request, query map[string][]string) (Page, error)
}

// ActionInfo describes a custom action.
type ActionInfo struct {
	// Name is the action's wire name.
	Name string
	// Detail is true for an action on one object (it needs a pk), false
	// for one on the collection.
	Detail bool
	// Safe is true when the action changes nothing, so that REST also
	// serves it on GET.
	Safe bool
}

// Page is one page of a list.
type Page struct {
	// Results holds the page's objects: a slice of the model, or of JSON
	// objects when sparse fields were asked for.
	Results any
	// Cursor is true in cursor mode (the request had a cursor parameter).
	Cursor bool
	// NextCursor continues a cursor-mode list; "" on its last page.
	NextCursor string
	// Number is the page number in page mode, from 1.
	Number int
	// Count is the number of objects in all pages (page mode).
	Count int
	// HasNext reports whether a page follows (page mode).
	HasNext bool
}

// Defaults are server-wide settings a resource falls back to.
type Defaults struct {
	PageSize   int        // 25 when zero
	Permission Permission // AllowAny when nil
	Query      QueryLimits
}

// QueryLimits bound the cost of one list query: past a limit the list is
// refused with 400 naming the parameter. Zero fields take the defaults;
// a negative one means no limit.
type QueryLimits struct {
	// MaxSearchTerms caps the terms of ?search= (each term is a condition
	// on every search field). Default 16.
	MaxSearchTerms int
	// MaxInValues caps the values of one __in filter. Default 100.
	MaxInValues int
	// MaxOrdering caps the fields of ?ordering=. Default 8.
	MaxOrdering int
	// MaxQueryBytes caps the size of the query: the query string (REST),
	// or the list request's data (WebSocket). Default 8192.
	MaxQueryBytes int
}

// WithDefaults returns l with its zero fields set to the defaults.
func (l QueryLimits) WithDefaults() QueryLimits {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&l.MaxSearchTerms, 16)
	def(&l.MaxInValues, 100)
	def(&l.MaxOrdering, 8)
	def(&l.MaxQueryBytes, 8192)
	return l
}

// DefaultPageSize is the page size of lists when nothing else is set.
const DefaultPageSize = 25
