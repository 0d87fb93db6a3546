package server_test

import (
	"context"
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
