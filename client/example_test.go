package client_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/streamapi/streamapi/client"
)

// Connect to the example server (go run ./cmd/streamapi), create a
// question, and watch its updates. Not run as a test: it needs the server.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, "ws://127.0.0.1:8000/ws", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	rep, err := c.Request(ctx, "questions", client.Payload{Action: "create", Data: map[string]any{"question_text": "Why?"}})
	if err != nil {
		log.Fatal(err)
	}
	if err := rep.Err(); err != nil { // a 4xx or 5xx response_status
		log.Fatal(err)
	}
	var q struct {
		ID int64 `json:"id"`
	}
	if err := rep.Decode(&q); err != nil {
		log.Fatal(err)
	}

	// Channels API dialect: update events of this question.
	sub, err := c.Subscribe(ctx, "questions", "update", q.ID)
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Unsubscribe(ctx)
	// DCRF dialect: update and delete events of the same object.
	inst, err := c.SubscribeInstance(ctx, "questions", q.ID)
	if err != nil {
		log.Fatal(err)
	}
	defer inst.Unsubscribe(ctx)

	if _, err := c.Request(ctx, "questions", client.Payload{Action: "patch", PK: q.ID, Data: map[string]any{"question_text": "Why not?"}}); err != nil {
		log.Fatal(err)
	}
	ev := <-sub.C
	fmt.Println(ev.Action, string(ev.Data))
	ev = <-inst.C
	fmt.Println(ev.Action, string(ev.RequestID))
}
