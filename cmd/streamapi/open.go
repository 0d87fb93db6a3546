package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"

	"github.com/streamapi/streamapi"
	"github.com/streamapi/streamapi/broker/memory"
	"github.com/streamapi/streamapi/broker/natsbroker"
	"github.com/streamapi/streamapi/broker/redisbroker"
	"github.com/streamapi/streamapi/store/sqlstore"
)

// openStore opens the database named by dsn. One line per backend, chosen
// by URL scheme.
func openStore(ctx context.Context, dsn string, opts sqlstore.Options) (*sqlstore.DB, error) {
	scheme, _, _ := strings.Cut(dsn, ":")
	switch scheme {
	case "sqlite", "postgres", "postgresql":
		return sqlstore.Open(ctx, dsn, opts)
	default:
		return nil, fmt.Errorf("unsupported database URL scheme: %q (want sqlite:PATH or postgres://...)", scheme)
	}
}

// openBroker opens the broker named by u.
func openBroker(ctx context.Context, u, prefix string, log *slog.Logger) (streamapi.Broker, error) {
	scheme, _, _ := strings.Cut(u, ":")
	switch scheme {
	case "memory":
		return memory.New(), nil
	case "redis", "rediss":
		return redisbroker.Open(ctx, u, redisbroker.Options{Prefix: prefix, Logger: log})
	case "nats", "tls":
		return natsbroker.Open(ctx, u, natsbroker.Options{Prefix: prefix, Logger: log})
	default:
		return nil, fmt.Errorf("unsupported broker URL scheme: %q (want memory, redis://HOST:PORT or nats://HOST:PORT)", scheme)
	}
}

// redact hides a URL's password for logs.
func redact(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		return u.Redacted()
	}
	return s
}
