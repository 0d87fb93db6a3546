// Package resource declares resources: the Go counterpart of Channels API's
// ResourceBinding (and DRF's ModelViewSet and serializer in one).
//
// A resource binds a stream name to a model, a Go struct whose json tags are
// its wire fields, and to the store table that holds it. It validates input
// with go-playground/validator rules in `validate` tags, reporting errors in
// DRF's words keyed by JSON field name; checks permissions per (user,
// action, pk); paginates lists; and offers custom detail and list actions.
// Every write goes through the store, so subscribers hear about it after
// commit, whether it came from a WebSocket, REST, a custom action or Go code.
//
// # Example
//
//	type Question struct {
//		bun.BaseModel `bun:"table:polls_question"`
//		ID   int64     `bun:"id,pk,autoincrement" json:"id"`
//		Text string    `bun:"question_text" json:"question_text" validate:"required,max=200"`
//		Pub  time.Time `bun:"pub_date" json:"pub_date"`
//	}
//
//	questions, err := resource.New(resource.Config[Question]{
//		Stream: "questions",
//		Label:  "polls.question",
//		Store:  db,
//		Defaults: func(_ context.Context, q *Question) { q.Pub = time.Now() },
//	})
//
// # Fields
//
// The primary key (bun's pk) and fields tagged `streamapi:"readonly"` are
// read-only: clients see them, and values they send for them are ignored,
// as DRF does. A `validate` rule "required" means the key must be present
// (and, for strings, not blank) on create and update; patch checks only the
// keys it sends.
package resource
