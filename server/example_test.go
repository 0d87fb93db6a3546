package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"

	"github.com/streamapi/streamapi/broker/memory"
	"github.com/streamapi/streamapi/client"
	"github.com/streamapi/streamapi/examples/polls"
	"github.com/streamapi/streamapi/server"
	"github.com/streamapi/streamapi/store/sqlstore"
)

// Mount the WebSocket and the debugger page on your own mux, next to your
// own routes, then talk to it with any Channels API client.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)

	broker := memory.New()
	defer broker.Close()
	db, err := sqlstore.Open(ctx, "sqlite:"+filepath.Join(dir, "polls.db"), sqlstore.Options{Publisher: broker})
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	if err := db.Migrate(ctx, polls.Migrations()); err != nil {
		log.Fatal(err)
	}
	app, err := polls.New(db, nil)
	if err != nil {
		log.Fatal(err)
	}
	api, err := server.New(ctx, server.Config{Resources: app.Resources(), Broker: broker})
	if err != nil {
		log.Fatal(err)
	}
	defer api.Shutdown(ctx)

	mux := http.NewServeMux()
	mux.Handle("/ws", api)
	mux.Handle("/channels-api/", api.Debugger("/ws"))
	mux.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "your own route") })
	hs := httptest.NewServer(mux)
	defer hs.Close()
	url := "ws" + strings.TrimPrefix(hs.URL, "http") + "/ws"

	watcher, err := client.Dial(ctx, url, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer watcher.Close()
	sub, err := watcher.Subscribe(ctx, "questions", "create", nil)
	if err != nil {
		log.Fatal(err)
	}

	c, err := client.Dial(ctx, url, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	rep, err := c.Request(ctx, "questions", client.Payload{
		Action:    "create",
		Data:      map[string]any{"question_text": "What is your favorite Go package?"},
		RequestID: "some-guid",
	})
	if err != nil {
		log.Fatal(err)
	}
	var q polls.Question
	_ = rep.Decode(&q)
	fmt.Println("reply:", rep.Status, string(rep.RequestID), q.QuestionText)

	ev := <-sub.C
	fmt.Println("event:", ev.Action, ev.Model, string(ev.PK))
	// Output:
	// reply: 201 "some-guid" What is your favorite Go package?
	// event: create polls.question 1
}

// A live list: the two choices of a question with the most votes, kept
// as they are by the server's events (the Go client applies them).
func Example_liveList() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	broker := memory.New()
	defer broker.Close()
	db, err := sqlstore.Open(ctx, "sqlite:"+filepath.Join(dir, "polls.db"), sqlstore.Options{Publisher: broker})
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	if err := db.Migrate(ctx, polls.Migrations()); err != nil {
		log.Fatal(err)
	}
	app, err := polls.New(db, nil)
	if err != nil {
		log.Fatal(err)
	}
	api, err := server.New(ctx, server.Config{Resources: app.Resources(), Broker: broker, ChangeLog: db})
	if err != nil {
		log.Fatal(err)
	}
	defer api.Shutdown(ctx)
	hs := httptest.NewServer(api)
	defer hs.Close()
	c, err := client.Dial(ctx, "ws"+strings.TrimPrefix(hs.URL, "http")+"/ws", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	q := &polls.Question{QuestionText: "Best editor?"}
	if err := app.Questions.Create(ctx, q); err != nil {
		log.Fatal(err)
	}
	for _, text := range []string{"vim", "emacs", "nano"} {
		if err := app.Choices.Create(ctx, &polls.Choice{QuestionID: q.ID, ChoiceText: text}); err != nil {
			log.Fatal(err)
		}
	}
	top, err := c.LiveList(ctx, "choices", map[string]any{"question": q.ID, "ordering": "-votes", "page_size": 2, "with_count": true})
	if err != nil {
		log.Fatal(err)
	}
	show := func() {
		var names []string
		for _, raw := range top.Items() {
			var ch polls.Choice
			_ = json.Unmarshal(raw, &ch)
			names = append(names, fmt.Sprintf("%s:%d", ch.ChoiceText, ch.Votes))
		}
		fmt.Println(names, "of", top.Count())
	}
	show()
	// A vote for nano brings it in and pushes emacs out: two events, one seq.
	if _, err := c.Request(ctx, "choices", client.Payload{Action: "vote", PK: 3}); err != nil {
		log.Fatal(err)
	}
	for range 2 {
		ev := <-top.C
		fmt.Println(ev.Action, string(ev.PK))
	}
	show()
	// Output:
	// [vim:0 emacs:0] of 3
	// delete 2
	// create 3
	// [nano:1 vim:0] of 3
}
