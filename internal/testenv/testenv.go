// Package testenv gives tests the local services named by environment
// variables, and skips a test, saying which variable would run it, when
// the variable is unset: `go test ./...` passes on a bare machine, and
// .ci/run sets them all. PollsServer serves the example app for tests
// that need a whole server.
//
//	STREAMAPI_TEST_POSTGRES  a PostgreSQL URL whose user may create databases
//	STREAMAPI_TEST_REDIS     a Redis URL (redis://127.0.0.1:6379)
//	STREAMAPI_TEST_NATS      a NATS URL (nats://127.0.0.1:4222)
package testenv

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver
)

// Lookup returns the variable's value, or skips tb when it is unset.
func Lookup(tb testing.TB, name, what string) string {
	tb.Helper()
	v := os.Getenv(name)
	if v == "" {
		tb.Skipf("%s is unset: set it to %s to run this test (.ci/run does)", name, what)
	}
	return v
}

// Name returns a short random name with the given prefix, for databases,
// channel prefixes and subjects that must not collide between tests.
func Name(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// Postgres creates a fresh, empty database on the server named by
// STREAMAPI_TEST_POSTGRES, drops it when the test ends, and returns its URL.
func Postgres(tb testing.TB) string {
	tb.Helper()
	admin := Lookup(tb, "STREAMAPI_TEST_POSTGRES", "a PostgreSQL URL such as postgres://root@127.0.0.1:5432/postgres?sslmode=disable")
	u, err := url.Parse(admin)
	if err != nil {
		tb.Fatalf("STREAMAPI_TEST_POSTGRES: %v", err)
	}
	db, err := sql.Open("pgx", admin)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	name := Name("streamapi_test_")
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		db.Close()
		tb.Fatalf("create database: %v", err)
	}
	tb.Cleanup(func() {
		defer db.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := db.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			tb.Errorf("drop database %s: %v", name, err)
		}
	})
	u.Path = "/" + name
	return u.String()
}

// Redis returns the URL in STREAMAPI_TEST_REDIS.
func Redis(tb testing.TB) string {
	tb.Helper()
	return Lookup(tb, "STREAMAPI_TEST_REDIS", "a Redis URL such as redis://127.0.0.1:6379")
}

// NATS returns the URL in STREAMAPI_TEST_NATS.
func NATS(tb testing.TB) string {
	tb.Helper()
	return Lookup(tb, "STREAMAPI_TEST_NATS", "a NATS URL such as nats://127.0.0.1:4222")
}

// SQL opens a plain database/sql connection to dsn, as another program
// (psql, a batch job) would have, closed when the test ends.
func SQL(tb testing.TB, dsn string) *sql.DB {
	tb.Helper()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}
