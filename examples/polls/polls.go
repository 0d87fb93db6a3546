// Package polls is the polls app of the Django tutorial that the original
// Channels API README builds on, declared with streamapi: questions, their
// choices, and a "vote" detail action.
//
//	stream questions  model polls.question  {id, question_text, pub_date}
//	stream choices    model polls.choice    {id, question, choice_text, votes}
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
}

// Choice is one answer to a question.
type Choice struct {
	bun.BaseModel `bun:"table:polls_choice" json:"-"`

	ID         int64  `bun:"id,pk,autoincrement" json:"id"`
	QuestionID int64  `bun:"question_id,notnull" json:"question" validate:"required"`
	ChoiceText string `bun:"choice_text,notnull" json:"choice_text" validate:"required,max=200"`
	Votes      int64  `bun:"votes,notnull" json:"votes" validate:"gte=0"`
}

// App is the two resources of the polls app.
type App struct {
	Questions *resource.Resource[Question]
	Choices   *resource.Resource[Choice]
}

// Resources returns the app's resources, for server.Config.
func (a *App) Resources() []streamapi.Resource {
	return []streamapi.Resource{a.Questions, a.Choices}
}

// New declares the polls resources on store. now gives pub_date's default
// (time.Now when nil).
func New(store streamapi.Store, now func() time.Time) (*App, error) {
	if now == nil {
		now = time.Now
	}
	a := &App{}
	var err error
	a.Questions, err = resource.New(resource.Config[Question]{
		Stream: "questions",
		Label:  "polls.question",
		Store:  store,
		Defaults: func(_ context.Context, q *Question) {
			// Microseconds, as Django keeps them, so what a client is sent
			// on create is what it reads back.
			q.PubDate = now().UTC().Truncate(time.Microsecond)
		},
		// ?pub_date__gte=2026-01-01&pub_date__lt=2027-01-01, ?search=why,
		// ?ordering=-pub_date.
		Filters:  map[string][]string{"pub_date": {"exact", "gt", "gte", "lt", "lte"}},
		Search:   []string{"question_text"},
		Ordering: []string{"id", "pub_date", "question_text"},
		// Deleting a question deletes its choices through their resource,
		// in the same transaction, so choice subscribers hear of it.
		BeforeDelete: func(ctx context.Context, q *Question) error {
			return a.deleteChoices(ctx, q.ID)
		},
	})
	if err != nil {
		return nil, fmt.Errorf("polls: %w", err)
	}
	a.Choices, err = resource.New(resource.Config[Choice]{
		Stream:   "choices",
		Label:    "polls.choice",
		Store:    store,
		Validate: a.validateChoice,
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

// validateChoice checks that the choice's question exists, with DRF's
// PrimaryKeyRelatedField message.
func (a *App) validateChoice(ctx context.Context, c *Choice, _ string) error {
	ok, err := a.Questions.Exists(ctx, c.QuestionID)
	if err != nil {
		return err
	}
	if !ok {
		errs := streamapi.FieldErrors{}
		errs.Add("question", fmt.Sprintf("Invalid pk \"%d\" - object does not exist.", c.QuestionID))
		return errs.Err()
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
	choices, err := a.Choices.List(ctx, streamapi.ListQuery{Equal: map[string]any{"question_id": questionID}})
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
