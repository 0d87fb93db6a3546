// Package polls is the polls app of the Django tutorial that the original
// Channels API README builds on, declared with streamapi: questions, their
// choices, and a "vote" detail action.
//
//	stream questions  model polls.question  {id, question_text, pub_date, owner, published}
//	stream choices    model polls.choice    {id, question, choice_text, votes, question_published, question_owner}
//
// With Options.Auth (cmd/streamapi --jwt-secret), questions have owners:
// anyone, anonymous included, sees published questions; an unpublished one
// only its owner; only authenticated users create; only the owner updates,
// deletes or unpublishes a question, or writes its choices; choices follow
// their question's visibility.
package polls

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"time"

	"github.com/streamapi/streamapi"
	"github.com/streamapi/streamapi/resource"
	"github.com/uptrace/bun"
)

// Migrations holds the app's schema, one folder per SQL dialect.
//
//go:embed migrations
var migrations embed.FS

// Migrations returns the schema migrations, for sqlstore.DB.Migrate: one
// folder per SQL dialect at its root.
func Migrations() fs.FS {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		panic(err) // the embedded folder is always there
	}
	return sub
}

// Question is a poll question.
type Question struct {
	bun.BaseModel `bun:"table:polls_question" json:"-"`

	ID           int64     `bun:"id,pk,autoincrement" json:"id"`
	QuestionText string    `bun:"question_text,notnull" json:"question_text" validate:"required,max=200"`
	PubDate      time.Time `bun:"pub_date,notnull" json:"pub_date"`
	// Owner is the sub of the user who created it, set by the server.
	Owner string `bun:"owner,notnull" json:"owner" streamapi:"readonly"`
	// Published questions are visible to everyone (default true).
	Published bool `bun:"published,notnull" json:"published"`
}

// Choice is one answer to a question.
type Choice struct {
	bun.BaseModel `bun:"table:polls_choice" json:"-"`

	ID         int64  `bun:"id,pk,autoincrement" json:"id"`
	QuestionID int64  `bun:"question_id,notnull" json:"question" validate:"required" streamapi:"writeonce"`
	ChoiceText string `bun:"choice_text,notnull" json:"choice_text" validate:"required,max=200"`
	Votes      int64  `bun:"votes,notnull" json:"votes" validate:"gte=0"`
	// The question's visibility, kept in step by the server, so that a
	// choice's visibility is decided by its own row (and so in memory for
	// events): it follows its question's.
	QuestionPublished bool   `bun:"question_published,notnull" json:"question_published" streamapi:"readonly"`
	QuestionOwner     string `bun:"question_owner,notnull" json:"question_owner" streamapi:"readonly"`
}

// App is the two resources of the polls app.
type App struct {
	Questions *resource.Resource[Question]
	Choices   *resource.Resource[Choice]
	auth      bool
}

// Resources returns the app's resources, for server.Config.
func (a *App) Resources() []streamapi.Resource {
	return []streamapi.Resource{a.Questions, a.Choices}
}

// Options configure the app.
type Options struct {
	// Now gives pub_date's default; time.Now when nil.
	Now func() time.Time
	// Auth turns on owners, published flags and their rules.
	Auth bool
}

// New declares the polls resources on store, open to anonymous users. now
// gives pub_date's default (time.Now when nil).
func New(store streamapi.Store, now func() time.Time) (*App, error) {
	return NewWithOptions(store, Options{Now: now})
}

// NewWithOptions declares the polls resources on store.
func NewWithOptions(store streamapi.Store, opts Options) (*App, error) {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	a := &App{auth: opts.Auth}
	var err error
	a.Questions, err = resource.New(resource.Config[Question]{
		Stream: "questions",
		Label:  "polls.question",
		Store:  store,
		Defaults: func(ctx context.Context, q *Question) {
			// Microseconds, as Django keeps them, so what a client is sent
			// on create is what it reads back.
			q.PubDate = now().UTC().Truncate(time.Microsecond)
			q.Published = true
			if u := streamapi.UserFrom(ctx); u != nil {
				q.Owner = u.ID
			}
		},
		Permission: a.permission(),
		Scope:      a.scope("owner", "published"),
		Validate:   a.ownerOnly,
		AfterWrite: a.followQuestion,
		// ?pub_date__gte=2026-01-01&pub_date__lt=2027-01-01, ?search=why,
		// ?ordering=-pub_date.
		Filters:  map[string][]string{"pub_date": {"exact", "gt", "gte", "lt", "lte"}},
		Search:   []string{"question_text"},
		Ordering: []string{"id", "pub_date", "question_text"},
		// Deleting a question deletes its choices through their resource,
		// in the same transaction, so choice subscribers hear of it.
		BeforeDelete: func(ctx context.Context, q *Question) error {
			if err := a.ownerOnly(ctx, q, streamapi.ActionDelete); err != nil {
				return err
			}
			return a.deleteChoices(ctx, q.ID)
		},
	})
	if err != nil {
		return nil, fmt.Errorf("polls: %w", err)
	}
	a.Choices, err = resource.New(resource.Config[Choice]{
		Stream:     "choices",
		Label:      "polls.choice",
		Store:      store,
		Validate:   a.validateChoice,
		Permission: a.permission(),
		Scope:      a.scope("question_owner", "question_published"),
		BeforeDelete: func(ctx context.Context, c *Choice) error {
			_, err := a.question(ctx, c.QuestionID)
			return err
		},
		// ?question=5, ?question__in=5,6, ?votes__gte=3, ?ordering=-votes.
		Filters:  map[string][]string{"question": {"exact", "in"}, "votes": {"exact", "gt", "gte", "lt", "lte"}},
		Ordering: []string{"id", "votes"},
		DetailActions: []resource.DetailAction[Choice]{{
			Name:     "Vote",
			WireName: "vote",
			Func:     a.vote,
		}},
	})
	if err != nil {
		return nil, fmt.Errorf("polls: %w", err)
	}
	return a, nil
}

// validateChoice checks that the choice's question exists (and that the
// user may see it), with DRF's PrimaryKeyRelatedField message, and copies
// the question's visibility onto the choice. The question is read without
// a lock: a write to a choice locks the choice, a write to a question the
// question and then its choices, always in that order, so the two never
// deadlock.
func (a *App) validateChoice(ctx context.Context, c *Choice, _ string) error {
	q, err := a.question(ctx, c.QuestionID)
	if err != nil {
		return err
	}
	c.QuestionPublished, c.QuestionOwner = q.Published, q.Owner
	return nil
}

// question loads a choice's question: an invalid-pk error when the user
// may not see it, PermissionDenied when the user is not its owner (with
// Auth on).
func (a *App) question(ctx context.Context, id int64) (*Question, error) {
	q, err := a.Questions.Get(ctx, id)
	visible := err == nil
	if visible && a.auth {
		visible, _ = a.Questions.Exists(ctx, id)
	}
	if streamapi.ErrorCode(err) == streamapi.ENOTFOUND || err == nil && !visible {
		errs := streamapi.FieldErrors{}
		errs.Add("question", fmt.Sprintf("Invalid pk \"%d\" - object does not exist.", id))
		return nil, errs.Err()
	}
	if err != nil {
		return nil, err
	}
	if err := a.ownerOnly(ctx, q, streamapi.ActionUpdate); err != nil {
		return nil, err
	}
	return q, nil
}

// permission: with Auth, reading is open and writing needs a user.
func (a *App) permission() streamapi.Permission {
	if !a.auth {
		return nil
	}
	return streamapi.PermissionFunc(func(_ context.Context, u *streamapi.User, action string, _ any) bool {
		switch action {
		case streamapi.ActionRetrieve, streamapi.ActionList, streamapi.ActionSubscribe, streamapi.ActionUnsubscribe,
			streamapi.ActionSubscribeInstance, streamapi.ActionUnsubscribeInstance:
			return true
		}
		return u.Authenticated()
	})
}

// scope: with Auth, a user sees what it owns and what is published.
func (a *App) scope(owner, published string) func(u *streamapi.User) resource.Q {
	if !a.auth {
		return nil
	}
	return func(u *streamapi.User) resource.Q {
		if !u.Authenticated() {
			return resource.Where(published, true)
		}
		return resource.Or(resource.Where(owner, u.ID), resource.Where(published, true))
	}
}

// ownerOnly refuses a change to a question (or its choices) by anyone but
// its owner, with Auth on.
func (a *App) ownerOnly(ctx context.Context, q *Question, action string) error {
	if !a.auth || action == streamapi.ActionCreate {
		return nil
	}
	if u := streamapi.UserFrom(ctx); !u.Authenticated() || u.ID != q.Owner {
		return streamapi.PermissionDenied(u)
	}
	return nil
}

// followQuestion keeps the question's visibility on its choices, in the
// same transaction: a choice whose question is unpublished leaves the view
// of those who may no longer see it, as an event. The list does not lock
// the choices, and writing one back writes only the two columns changed
// here: a vote cast meanwhile is kept (Table.Update).
func (a *App) followQuestion(ctx context.Context, q *Question, action string) error {
	if action == streamapi.ActionCreate {
		return nil // a new question has no choices yet
	}
	choices, err := a.Choices.List(ctx, streamapi.ListQuery{Equal: map[string]any{"question": q.ID}})
	if err != nil {
		return err
	}
	for i := range choices {
		c := &choices[i]
		if c.QuestionPublished == q.Published && c.QuestionOwner == q.Owner {
			continue
		}
		c.QuestionPublished, c.QuestionOwner = q.Published, q.Owner
		if err := a.Choices.Table().Update(ctx, c); err != nil {
			return err
		}
	}
	return nil
}

// vote adds one vote. It runs in the action's write transaction, so
// concurrent votes never lose one; subscribers get the update after commit.
func (a *App) vote(ctx context.Context, _ *streamapi.Request, c *Choice) (any, int, error) {
	c.Votes++
	if err := a.Choices.Table().Update(ctx, c); err != nil {
		return nil, 0, err
	}
	return c, 200, nil
}

func (a *App) deleteChoices(ctx context.Context, questionID int64) error {
	// A question has few choices: delete them one by one through the
	// resource, so each gets its delete event.
	choices, err := a.Choices.List(ctx, streamapi.ListQuery{Equal: map[string]any{"question": questionID}})
	if err != nil {
		return err
	}
	for _, c := range choices {
		if err := a.Choices.Delete(ctx, c.ID); err != nil {
			return err
		}
	}
	return nil
}
