package streamapi

import (
	"context"
	"encoding/json"
	"reflect"
)

// Store persists the objects of resources and reports every committed write
// as a Change to its Publisher. Implementations: store/sqlstore (SQLite, and
// PostgreSQL later). Every implementation passes internal/storetest.
//
// Transactions travel in the context: inside Tx, every Table call made with
// the context handed to fn joins that transaction, and the changes it makes
// are published once, after commit, in commit order. Outside Tx each write is
// its own transaction.
type Store interface {
	// Table returns the table holding model, a pointer to a struct (e.g.
	// (*Question)(nil)), whose changes carry the given model label.
	Table(model any, label string) (Table, error)
	// Tx runs fn in one write transaction. If fn returns an error, or
	// panics, the transaction is rolled back and no change is published. A Tx
	// inside a Tx joins the outer one. A transaction that fails on a
	// retryable conflict with another (a deadlock, a serialization
	// failure, a lost update caught by Update) is rolled back and run
	// again, a bounded number of times: fn must do nothing outside the
	// transaction that it cannot do twice.
	Tx(ctx context.Context, fn func(ctx context.Context) error) error
	// Close releases the store's connections.
	Close() error
}

// ReadTxer is implemented by stores that can run reads in one read-only
// transaction, a consistent snapshot that does not wait for writers (and,
// on SQLite, does not hold its single writer). Resources run Safe custom
// actions in it when their store offers it. A write inside it fails.
type ReadTxer interface {
	ReadTx(ctx context.Context, fn func(ctx context.Context) error) error
}

// Table reads and writes the objects of one model. dst and obj are pointers
// to the model's struct; list destinations are pointers to slices of it.
// Methods return ENOTFOUND when the object does not exist.
type Table interface {
	// Label returns the model label.
	Label() string
	// Column returns the SQL column of the model's struct field at index
	// (as reflect's FieldByIndex takes it), and whether it has one.
	Column(index []int) (string, bool)
	// PKType returns the Go type of the primary key.
	PKType() reflect.Type
	// Get loads the object whose primary key is pk into dst. Inside a
	// write transaction the row is not locked, but remembered as read:
	// Update then writes only the columns changed since.
	Get(ctx context.Context, dst any, pk any) error
	// Lock is Get that, inside a write transaction, also locks the row
	// until commit: the read of an object the transaction will change
	// from what it read (a counter), so that its concurrent writers wait
	// rather than conflict. Outside a transaction it is Get.
	Lock(ctx context.Context, dst any, pk any) error
	// List loads up to q.Limit objects after skipping q.Offset, in primary
	// key order.
	List(ctx context.Context, dst any, q ListQuery) error
	// Count returns how many objects q's filters select (its Offset and
	// Limit are ignored).
	Count(ctx context.Context, q ListQuery) (int, error)
	// Insert stores obj, filling in generated columns (the primary key).
	Insert(ctx context.Context, obj any) error
	// Update writes obj over the stored object having its primary key:
	// only the columns obj changed since the transaction read it (all
	// that differ, for an object it did not read), so that a column
	// another transaction changed meanwhile is kept. obj is then loaded
	// with the object as stored, which the update event carries. When a
	// column obj changes was also changed by another transaction since
	// the read, the transaction fails with a retryable conflict and Tx
	// runs it again.
	Update(ctx context.Context, obj any) error
	// Delete removes the object having obj's primary key, and loads obj
	// with the object as it was, which the delete event carries.
	Delete(ctx context.Context, obj any) error
	// UpdateWhere applies set to every object q's Equal and Where select
	// (its paging and order are ignored), in one statement per 1,000
	// objects, and records one update change per object it changed, as
	// Update does, in primary key order. It returns how many objects q
	// selected. The rows are locked first, so the change's before and
	// after are exact. An object the transaction read before holds the
	// old values: read it again before writing it back.
	UpdateWhere(ctx context.Context, q ListQuery, set ...Set) (int, error)
}

// Set is one assignment of a bulk update (Table.UpdateWhere): Column =
// Value, or with Add, Column = Column + Value (a number).
type Set struct {
	Column string
	Value  any
	Add    bool
}

// ListQuery selects one page of a list. Values are always bound as
// parameters, never spliced into SQL.
type ListQuery struct {
	// Offset and Limit select the page; Limit 0 means no limit.
	Offset, Limit int
	// Equal keeps the objects whose columns equal the given values. A
	// Table takes SQL column names; a resource's List takes the fields'
	// JSON names, as the wire does. A name there is not is an EINVALID
	// error.
	Equal map[string]any
	// Where keeps the objects for which every condition holds.
	Where []Cond
	// Order sorts by these columns, then by the primary key (ascending
	// unless the primary key is in Order), so that pages neither repeat
	// nor skip rows while nothing changes. Text compares byte by byte.
	Order []Order
	// After, when set, keeps only the objects that sort after the one
	// whose Order values and primary key these are (keyset, or cursor,
	// pagination): one value per Order column, then the primary key.
	After []any
}

// Lookups a Cond can use: django-filter's names.
const (
	LookupExact      = "exact"
	LookupGT         = "gt"
	LookupGTE        = "gte"
	LookupLT         = "lt"
	LookupLTE        = "lte"
	LookupIn         = "in"
	LookupContains   = "contains"   // case-sensitive substring
	LookupIContains  = "icontains"  // substring, ignoring the case of ASCII letters
	LookupStartsWith = "startswith" // case-sensitive prefix
	LookupIsNull     = "isnull"
)

// Cond is one condition on a column; or, when Any is set, the condition
// that at least one of Any holds; or, when All is set, that all of All do.
type Cond struct {
	Column string
	Lookup string
	// Value has the column's Go type (its element type for a pointer
	// field): a []any of them for LookupIn, a bool for LookupIsNull.
	Value any
	Any   []Cond
	All   []Cond
	// Member, when set, makes the condition "Column holds the key of a
	// group the user belongs to", read from a membership table: a
	// relation scope. Lookup and Value are then unused.
	Member *Membership
}

// Membership is the condition of a relation scope: the object's column
// names a group (a board) that has a row in Table whose Group column is
// that key and whose User column is UserID. In SQL it is a semi-join,
// Column IN (SELECT Group FROM Table WHERE User = UserID), which an index
// on the membership table's (User, Group) serves; in memory, for events,
// Has answers from an index the server keeps in step with the membership
// table's change feed.
type Membership struct {
	Table  Table  // the membership table
	Group  string // its column holding the group's key
	User   string // its column holding the member's user ID
	UserID string
	// Has reports whether the user belongs to the group whose key, as
	// canonical JSON (EncodePK), is given. It must not keep group.
	Has func(group []byte) bool
}

// Order is one sort key.
type Order struct {
	Column string
	Desc   bool
}

// Publisher receives committed changes, in commit order. A Broker is one.
type Publisher interface {
	Publish(ctx context.Context, changes ...Change) error
}

// EncodePK returns the canonical JSON of a primary key.
func EncodePK(pk any) json.RawMessage {
	b, err := json.Marshal(pk)
	if err != nil {
		return json.RawMessage("null")
	}
	return b
}

// Checker is implemented by tables (and resources) that can check, at
// start, that the database agrees with the model: server.New calls it, so
// that a missing table or column fails start-up with its name rather than
// a 500 on the first write.
type Checker interface {
	Check(ctx context.Context) error
}
