package sqlstore_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/streamapi/streamapi"
	"github.com/streamapi/streamapi/internal/storetest"
	"github.com/streamapi/streamapi/internal/testenv"
	"github.com/streamapi/streamapi/store/sqlstore"
)

// MustOpen opens a migrated SQLite store in a temporary directory.
func MustOpen(tb testing.TB, pub streamapi.Publisher) *sqlstore.DB {
	tb.Helper()
	return mustOpen(tb, "sqlite:"+filepath.Join(tb.TempDir(), "test.db"), sqlstore.Options{Publisher: pub})
}

// MustOpenPostgres opens a migrated store on a fresh PostgreSQL database.
func MustOpenPostgres(tb testing.TB, pub streamapi.Publisher) *sqlstore.DB {
	tb.Helper()
	return mustOpen(tb, testenv.Postgres(tb), sqlstore.Options{Publisher: pub})
}

func mustOpen(tb testing.TB, dsn string, opts sqlstore.Options) *sqlstore.DB {
	tb.Helper()
	ctx := context.Background()
	db, err := sqlstore.Open(ctx, dsn, opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	if err := db.Migrate(ctx, storetest.Migrations()); err != nil {
		tb.Fatal(err)
	}
	return db
}

func TestSQLite_Conformance(t *testing.T) {
	storetest.Run(t, func(t testing.TB, pub streamapi.Publisher) streamapi.Store { return MustOpen(t, pub) })
	storetest.RunChangeLog(t, func(t testing.TB, pub streamapi.Publisher) streamapi.Store { return MustOpen(t, pub) })
}

func TestPostgres_Conformance(t *testing.T) {
	testenv.Postgres(t) // skips the whole test when PostgreSQL is not configured
	storetest.Run(t, func(t testing.TB, pub streamapi.Publisher) streamapi.Store { return MustOpenPostgres(t, pub) })
	storetest.RunChangeLog(t, func(t testing.TB, pub streamapi.Publisher) streamapi.Store { return MustOpenPostgres(t, pub) })
}

func TestOpen_Errors(t *testing.T) {
	ctx := context.Background()
	for dsn, want := range map[string]string{
		"nothing":                          "has no scheme",
		"mysql://x":                        `unsupported database URL scheme: "mysql"`,
		"sqlite:":                          "want a file path",
		"sqlite::memory:":                  "want a file path",
		"sqlite:/tmp/a?x=1":                "want a file path",
		"sqlite:/nonexistent-dir/sub/x.db": "open",
	} {
		_, err := sqlstore.Open(ctx, dsn, sqlstore.Options{})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Open(%q) = %v, want an error containing %q", dsn, err, want)
		}
	}
}

func TestMigrate_Idempotent(t *testing.T) {
	db := MustOpen(t, nil)
	if err := db.Migrate(context.Background(), storetest.Migrations()); err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	if db.Dialect() != "sqlite" {
		t.Fatalf("dialect %q", db.Dialect())
	}
}

func BenchmarkSQLite_Insert(b *testing.B) {
	db := MustOpen(b, nil)
	tb, err := db.Table((*storetest.Widget)(nil), storetest.Label)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := tb.Insert(ctx, &storetest.Widget{Name: "w" + itoa(i)}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSQLite_Get(b *testing.B) {
	db := MustOpen(b, nil)
	tb, _ := db.Table((*storetest.Widget)(nil), storetest.Label)
	ctx := context.Background()
	w := &storetest.Widget{Name: "w"}
	if err := tb.Insert(ctx, w); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var got storetest.Widget
		if err := tb.Get(ctx, &got, w.ID); err != nil {
			b.Fatal(err)
		}
	}
}

func itoa(i int) string {
	const digits = "0123456789"
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{digits[i%10]}, b...)
	}
	return string(b)
}

// BenchmarkOutbox measures what the change log costs a write: inserts per
// second with and without it, on SQLite and (when configured) PostgreSQL,
// from one writer and from 16 at once. Each write is its own transaction.
//
//	go test -run '^$' -bench Outbox -benchtime 3s ./store/sqlstore/
func BenchmarkOutbox(b *testing.B) {
	type backend struct {
		name string
		dsn  func(b *testing.B) string
	}
	backends := []backend{
		{"sqlite", func(b *testing.B) string { return "sqlite:" + filepath.Join(b.TempDir(), "bench.db") }},
		{"postgres", func(b *testing.B) string { return testenv.Postgres(b) }},
	}
	for _, be := range backends {
		for _, log := range []bool{false, true} {
			for _, writers := range []int{1, 16, 64} {
				name := fmt.Sprintf("%s/log=%v/writers=%d", be.name, log, writers)
				b.Run(name, func(b *testing.B) {
					db := mustOpen(b, be.dsn(b), sqlstore.Options{NoChangeLog: !log, Conns: 32})
					tb, err := db.Table((*storetest.Widget)(nil), storetest.Label)
					if err != nil {
						b.Fatal(err)
					}
					var n atomic.Int64
					b.ReportAllocs()
					b.ResetTimer()
					start := time.Now()
					var wg sync.WaitGroup
					for w := 0; w < writers; w++ {
						wg.Add(1)
						go func() {
							defer wg.Done()
							for {
								i := n.Add(1)
								if i > int64(b.N) {
									return
								}
								if err := tb.Insert(context.Background(), &storetest.Widget{Name: "w" + itoa(int(i))}); err != nil {
									b.Error(err)
									return
								}
							}
						}()
					}
					wg.Wait()
					n.Store(int64(b.N))
					b.ReportMetric(float64(n.Load())/time.Since(start).Seconds(), "writes/s")
				})
			}
		}
	}
}
