package streamapi

import "context"

// Transition is one user joining (Joined) or leaving one group of a
// relation: the membership rows of (Group, User) went from none to some,
// or from some to none. Group is the group's key as canonical JSON.
type Transition struct {
	User, Group string
	Joined      bool
}

// Relation is a membership index: which users belong to which groups
// (boards), read from a membership resource's rows. The server loads it at
// start and keeps it in step with the membership model's change feed,
// exactly once and in seq order, so that relation scopes are evaluated
// for events in memory. resource.Membership builds one.
type Relation interface {
	// Model is the membership resource's model label.
	Model() string
	// Load fills the index with the membership rows as one read snapshot
	// holds them, and returns the model's last seq in that snapshot:
	// the feed delivers the model's changes after it.
	Load(ctx context.Context) (seq int64, err error)
	// Apply brings the index up to c, a change of Model delivered in seq
	// order, and returns the transitions it made.
	Apply(c *Change) []Transition
	// Peek returns the transitions Apply would make for c, without
	// making them.
	Peek(c *Change) []Transition
	// Rows returns the membership rows of group as the index holds them,
	// as create changes numbered seq.
	Rows(group string, seq int64) []Change
	// Noted records that user's view of model changed (a transition)
	// when model's changes up to seq had been delivered; user "" records
	// the position at which the index started, before which nothing is
	// known.
	Noted(user, model string, seq int64)
	// ChangedAfter reports whether user's view of model may have changed
	// by a transition at or after model's seq since: a subscription
	// resuming from since would then miss objects entering or leaving
	// view, and must resync.
	ChangedAfter(user, model string, since int64) bool
}

// RelationScoper is implemented by resources whose scope follows one or
// more relations (resource.Relation.Includes).
type RelationScoper interface {
	Scoper
	// Relations returns the relations the scope reads.
	Relations() []Relation
	// Group reads, in one read snapshot, up to limit+1 objects whose key
	// under rel is group (more than limit means the group is too large to
	// send), as create changes carrying the model's last seq in that
	// snapshot, and returns that seq.
	Group(ctx context.Context, rel Relation, group string, limit int) (seq int64, objs []Change, err error)
	// VisibilityAcross is Visibility where "before" is evaluated as if the
	// transitions ts of rel had not happened yet.
	VisibilityAcross(c *Change, rel Relation, ts []Transition) Visibility
}
