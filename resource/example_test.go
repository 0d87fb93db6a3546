package resource_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/streamapi/streamapi"
	"github.com/streamapi/streamapi/resource"
	"github.com/streamapi/streamapi/store/sqlstore"
	"github.com/uptrace/bun"
)

// Question is a model: bun tags name its table and key, json tags its wire
// fields, validate tags its rules.
type Question struct {
	bun.BaseModel `bun:"table:questions" json:"-"`
	ID            int64     `bun:"id,pk,autoincrement" json:"id"`
	Text          string    `bun:"question_text,notnull" json:"question_text" validate:"required,max=200"`
	PubDate       time.Time `bun:"pub_date,notnull" json:"pub_date"`
}

// printer is a Publisher that prints the changes a store commits.
type printer struct{}

func (printer) Publish(_ context.Context, cs ...streamapi.Change) error {
	for _, c := range cs {
		fmt.Printf("event: %s %s pk %s\n", c.Model, c.Action, c.PK)
	}
	return nil
}

func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	db, err := sqlstore.Open(ctx, "sqlite:"+filepath.Join(dir, "example.db"), sqlstore.Options{Publisher: printer{}})
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Bun().NewCreateTable().Model((*Question)(nil)).Exec(ctx); err != nil {
		log.Fatal(err)
	}

	questions, err := resource.New(resource.Config[Question]{
		Stream:   "questions",
		Label:    "polls.question",
		Store:    db,
		PageSize: 10,
		Defaults: func(_ context.Context, q *Question) { q.PubDate = time.Now().UTC() },
	})
	if err != nil {
		log.Fatal(err)
	}

	// Requests normally arrive over the WebSocket (package server); Serve
	// is what answers them.
	rep := questions.Serve(ctx, &streamapi.Request{Action: "create", Data: []byte(`{"question_text": "What's new?"}`)})
	fmt.Println(rep.Status, rep.Data.(*Question).Text)
	rep = questions.Serve(ctx, &streamapi.Request{Action: "create", Data: []byte(`{}`)})
	fmt.Println(rep.Err)

	// Go code writes through the same resource, and its writes are events
	// too.
	q := &Question{Text: "From Go"}
	if err := questions.Create(ctx, q); err != nil {
		log.Fatal(err)
	}
	// Output:
	// event: polls.question create pk 1
	// 201 What's new?
	// streamapi: invalid: question_text: This field is required.
	// event: polls.question create pk 2
}

// Grow is the input of a "grow" custom action.
type Grow struct {
	By int `json:"by" validate:"required,gte=1,lte=10"`
}

// Input decodes and checks a custom action's data: a bad value answers 400
// with the usual field messages, a good one arrives typed.
func ExampleInput() {
	grow := func(data string) {
		req := &streamapi.Request{Stream: "questions", Action: "grow", Data: []byte(data)}
		in, err := resource.Input[Grow](req)
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println("grow by", in.By)
	}
	grow(`{"by": 3}`)
	grow(`{"by": 11}`)
	grow(`{}`)
	// Output:
	// grow by 3
	// streamapi: invalid: by: Ensure this value is less than or equal to 10.
	// streamapi: invalid: by: This field is required.
}
