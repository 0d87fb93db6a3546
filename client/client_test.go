package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/streamapi/streamapi/client"
	"github.com/streamapi/streamapi/internal/testenv"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"))
}

// serve starts the polls app and returns its WebSocket URL.
func serve(t *testing.T) string { return testenv.PollsServer(t).WS }

func TestClient_RequestsAfterCloseFail(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, serve(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := c.Request(ctx, "questions", client.Payload{Action: "list"}); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("Request after Close: %v, want ErrClosed", err)
	}
}

func TestClient_ReplyErrAndContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, serve(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rep, err := c.Request(ctx, "questions", client.Payload{Action: "retrieve", PK: 1, RequestID: 42})
	if err != nil {
		t.Fatal(err)
	}
	var se *client.StatusError
	if !errors.As(rep.Err(), &se) || se.Status != 404 || string(se.Errors) != `["Not found."]` || string(rep.RequestID) != "42" {
		t.Fatalf("reply %s: Err %v", rep.Raw, rep.Err())
	}
	// A cancelled context fails the request and leaves the connection
	// usable. (coder/websocket closes a connection whose write context is
	// done when its write locks win random selects; without the client's
	// check, some of 20 tries close it: the requests below then fail.)
	done, stop := context.WithCancel(ctx)
	stop()
	for i := 0; i < 20; i++ {
		if _, err := c.Request(done, "questions", client.Payload{Action: "list"}); !errors.Is(err, context.Canceled) {
			t.Fatalf("Request with a cancelled context: %v", err)
		}
	}
	// The connection is still usable, and a refused subscription is a
	// *StatusError.
	if _, err := c.Subscribe(ctx, "questions", "explode", nil); !errors.As(err, &se) || se.Status != 400 {
		t.Fatalf("Subscribe to an invalid kind: %v", err)
	}
	if _, err := c.SubscribeInstance(ctx, "questions", 404); !errors.As(err, &se) || se.Status != 404 {
		t.Fatalf("SubscribeInstance to a missing object: %v", err)
	}
}

func TestDial_Refused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := client.Dial(ctx, "ws://127.0.0.1:1/ws", nil); err == nil {
		t.Fatal("Dial to a closed port succeeded")
	}
}

// TestClient_UnmatchedOverflowIsCounted: frames that find the Unmatched
// channel full are dropped and counted, not lost silently.
func TestClient_UnmatchedOverflowIsCounted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, serve(t), &client.Options{UnmatchedBuffer: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Five replies to raw frames, which no request waits for: two fit.
	for i := 0; i < 5; i++ {
		if err := c.SendRaw(ctx, []byte(`{"stream":"questions","payload":{"action":"retrieve","pk":1}}`)); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for c.Dropped() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("Dropped = %d after 5 frames into a buffer of 2, want 3", c.Dropped())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := len(c.Unmatched()); n != 2 {
		t.Fatalf("%d frames in Unmatched, want 2", n)
	}
}
