package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/streamapi/streamapi"
	"github.com/streamapi/streamapi/broker/memory"
	"github.com/streamapi/streamapi/store/sqlstore"
)

// openStore opens the database named by dsn, publishing to pub. One line
// per backend, chosen by URL scheme.
func openStore(ctx context.Context, dsn string, pub streamapi.Publisher, log *slog.Logger) (*sqlstore.DB, error) {
	scheme, _, _ := strings.Cut(dsn, ":")
	switch scheme {
	case "sqlite":
		return sqlstore.Open(ctx, dsn, sqlstore.Options{Publisher: pub, Logger: log})
	default:
		return nil, fmt.Errorf("unsupported database URL scheme: %q (want sqlite:PATH)", scheme)
	}
}

// openBroker opens the broker named by url.
func openBroker(url string) (streamapi.Broker, error) {
	scheme, _, _ := strings.Cut(url, ":")
	switch scheme {
	case "memory":
		return memory.New(), nil
	default:
		return nil, fmt.Errorf("unsupported broker URL scheme: %q (want memory)", scheme)
	}
}
