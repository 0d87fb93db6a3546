package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"runtime"
	"strings"
	"sync"

	"github.com/streamapi/streamapi"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/sqlitedialect"
	"github.com/uptrace/bun/migrate"
	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// Options configures a DB. The zero value is valid.
type Options struct {
	// Publisher receives the changes of every committed transaction, in
	// commit order. Nil drops them.
	Publisher streamapi.Publisher
	// Logger reports publish failures. Nil uses slog.Default().
	Logger *slog.Logger
	// ReadConns caps the read pool; zero means max(4, GOMAXPROCS).
	ReadConns int
}

// DB is a streamapi.Store on a SQL database.
type DB struct {
	dialect string
	w       *bun.DB // the single writer
	r       *bun.DB // read-only pool
	pub     streamapi.Publisher
	log     *slog.Logger

	// pubMu is held from commit to the end of publishing, so that changes
	// reach the publisher in commit order.
	pubMu sync.Mutex
}

var _ streamapi.Store = (*DB)(nil)

// Open connects to the database named by dsn ("sqlite:PATH").
func Open(ctx context.Context, dsn string, opts Options) (*DB, error) {
	scheme, rest, ok := strings.Cut(dsn, ":")
	if !ok {
		return nil, fmt.Errorf("sqlstore: DSN %q has no scheme (want sqlite:PATH)", dsn)
	}
	db := &DB{pub: opts.Publisher, log: opts.Logger}
	if db.log == nil {
		db.log = slog.Default()
	}
	switch scheme {
	case "sqlite":
		if err := db.openSQLite(ctx, rest, opts); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("sqlstore: unsupported database URL scheme: %q", scheme)
	}
	return db, nil
}

func (db *DB) openSQLite(ctx context.Context, path string, opts Options) error {
	if path == "" || strings.Contains(path, "?") || strings.Contains(path, ":memory:") {
		return fmt.Errorf("sqlstore: sqlite path %q: want a file path without parameters", path)
	}
	// busy_timeout must come first so the WAL switch itself waits for locks.
	params := url.Values{}
	params.Add("_pragma", "busy_timeout(10000)")
	params.Add("_pragma", "journal_mode(WAL)")
	params.Add("_pragma", "synchronous(NORMAL)")
	params.Add("_pragma", "foreign_keys(ON)")
	params.Add("_pragma", "temp_store(MEMORY)")
	base := "file:" + path + "?" + params.Encode()

	w, err := sql.Open("sqlite", base+"&_txlock=immediate")
	if err != nil {
		return fmt.Errorf("sqlstore: open writer: %w", err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	if err := w.PingContext(ctx); err != nil {
		w.Close()
		return fmt.Errorf("sqlstore: open %s: %w", path, err)
	}
	r, err := sql.Open("sqlite", base+"&_pragma=query_only(1)")
	if err != nil {
		w.Close()
		return fmt.Errorf("sqlstore: open readers: %w", err)
	}
	n := opts.ReadConns
	if n <= 0 {
		n = max(4, runtime.GOMAXPROCS(0))
	}
	r.SetMaxOpenConns(n)
	r.SetMaxIdleConns(n)
	db.dialect = "sqlite"
	db.w = bun.NewDB(w, sqlitedialect.New())
	db.r = bun.NewDB(r, sqlitedialect.New())
	return nil
}

// Dialect returns the SQL dialect's name: "sqlite".
func (db *DB) Dialect() string { return db.dialect }

// Bun returns the writer's bun.DB, for queries the Table interface does not
// cover. Writes made through it directly produce no events; use Tx and the
// tables instead.
func (db *DB) Bun() *bun.DB { return db.w }

// Close closes both pools.
func (db *DB) Close() error {
	return errors.Join(db.w.Close(), db.r.Close())
}

// Migrate applies, in name order, the bun SQL migrations (NAME.up.sql, or
// NAME.tx.up.sql to run one in a transaction) found in fsys under the folder
// named after the dialect, skipping those already applied.
func (db *DB) Migrate(ctx context.Context, fsys fs.FS) error {
	sub, err := fs.Sub(fsys, db.dialect)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	ms := migrate.NewMigrations()
	if err := ms.Discover(sub); err != nil {
		return fmt.Errorf("migrate: discover: %w", err)
	}
	m := migrate.NewMigrator(db.w, ms, migrate.WithMarkAppliedOnSuccess(true))
	if err := m.Init(ctx); err != nil {
		return fmt.Errorf("migrate: init: %w", err)
	}
	if _, err := m.Migrate(ctx); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}

// txState is a write transaction in progress, carried by the context.
type txState struct {
	db      *DB
	tx      bun.Tx
	changes []streamapi.Change
}

type txKey struct{}

func (db *DB) txFrom(ctx context.Context) *txState {
	st, _ := ctx.Value(txKey{}).(*txState)
	if st != nil && st.db == db {
		return st
	}
	return nil
}

// Tx runs fn in one write transaction; see streamapi.Store.
func (db *DB) Tx(ctx context.Context, fn func(ctx context.Context) error) (err error) {
	if db.txFrom(ctx) != nil {
		return fn(ctx)
	}
	tx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlstore: begin: %w", err)
	}
	st := &txState{db: db, tx: tx}
	committed := false
	defer func() {
		if !committed {
			_ = tx.Rollback()
		}
	}()
	if err := fn(context.WithValue(ctx, txKey{}, st)); err != nil {
		return err
	}
	db.pubMu.Lock()
	defer db.pubMu.Unlock()
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlstore: commit: %w", mapErr(err))
	}
	committed = true
	if db.pub != nil && len(st.changes) > 0 {
		// The write is durable; a publish failure must not turn it into an
		// error for the caller. The outbox (a later change) closes this gap.
		if err := db.pub.Publish(context.WithoutCancel(ctx), st.changes...); err != nil {
			db.log.ErrorContext(ctx, "publish changes", "count", len(st.changes), "err", err)
		}
	}
	return nil
}

// idb returns what a table call runs on: the context's transaction, or a pool.
func (db *DB) idb(ctx context.Context) bun.IDB {
	if st := db.txFrom(ctx); st != nil {
		return st.tx
	}
	return db.r
}
