package testenv

import (
	"context"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/streamapi/streamapi/broker/memory"
	"github.com/streamapi/streamapi/examples/polls"
	"github.com/streamapi/streamapi/server"
	"github.com/streamapi/streamapi/store/sqlstore"
)

// Polls is the polls app served over a test HTTP server.
type Polls struct {
	WS  string // the WebSocket URL
	App *polls.App
}

// PollsServer serves the polls app on a fresh SQLite file with the
// in-process broker and the change log, until the test ends.
func PollsServer(tb testing.TB) *Polls {
	tb.Helper()
	ctx := context.Background()
	broker := memory.New()
	db, err := sqlstore.Open(ctx, "sqlite:"+filepath.Join(tb.TempDir(), "polls.db"), sqlstore.Options{Publisher: broker})
	if err != nil {
		tb.Fatal(err)
	}
	if err := db.Migrate(ctx, polls.Migrations()); err != nil {
		tb.Fatal(err)
	}
	app, err := polls.New(db, nil)
	if err != nil {
		tb.Fatal(err)
	}
	api, err := server.New(ctx, server.Config{Resources: app.Resources(), Broker: broker, ChangeLog: db})
	if err != nil {
		tb.Fatal(err)
	}
	hs := httptest.NewServer(api.Handler())
	tb.Cleanup(func() {
		_ = api.Shutdown(ctx)
		hs.Close()
		broker.Close()
		db.Close()
	})
	return &Polls{WS: "ws" + strings.TrimPrefix(hs.URL, "http") + "/ws", App: app}
}
