package testenv

import (
	"context"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/streamapi/streamapi"
	"github.com/streamapi/streamapi/broker/memory"
	"github.com/streamapi/streamapi/examples/polls"
	"github.com/streamapi/streamapi/server"
	"github.com/streamapi/streamapi/store/sqlstore"
)

// Polls is the polls app served over a test HTTP server.
type Polls struct {
	WS   string // the WebSocket URL
	Base string // the HTTP base URL (REST at Base+"/api/")
	App  *polls.App
	API  *server.Server
	DB   *sqlstore.DB
}

// PollsAuth serves the app with owners and their rules (polls.Options.Auth)
// behind a, as cmd/streamapi --jwt-secret does.
func PollsAuth(a streamapi.Authenticator) func(*polls.Options, *server.Config) {
	return func(o *polls.Options, c *server.Config) {
		o.Auth = true
		c.Authenticator = a
	}
}

// PollsServer serves the polls app on a fresh SQLite file with the
// in-process broker and the change log, until the test ends.
func PollsServer(tb testing.TB, opts ...func(*polls.Options, *server.Config)) *Polls {
	tb.Helper()
	return PollsServerOn(tb, "sqlite:"+filepath.Join(tb.TempDir(), "polls.db"), opts...)
}

// PollsServerOn is PollsServer on the database dsn (a fresh one: see
// Postgres).
func PollsServerOn(tb testing.TB, dsn string, opts ...func(*polls.Options, *server.Config)) *Polls {
	tb.Helper()
	ctx := context.Background()
	broker := memory.New()
	db, err := sqlstore.Open(ctx, dsn, sqlstore.Options{Publisher: broker})
	if err != nil {
		tb.Fatal(err)
	}
	if err := db.Migrate(ctx, polls.Migrations()); err != nil {
		tb.Fatal(err)
	}
	var po polls.Options
	cfg := server.Config{Broker: broker, ChangeLog: db}
	for _, o := range opts {
		o(&po, &cfg)
	}
	app, err := polls.NewWithOptions(db, po)
	if err != nil {
		tb.Fatal(err)
	}
	cfg.Resources = app.Resources()
	api, err := server.New(ctx, cfg)
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
	return &Polls{WS: "ws" + strings.TrimPrefix(hs.URL, "http") + "/ws", Base: hs.URL, App: app, API: api, DB: db}
}
