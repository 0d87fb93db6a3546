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
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
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
	// ReadConns caps SQLite's read pool; zero means max(4, GOMAXPROCS).
	ReadConns int
	// Conns caps PostgreSQL's pool; zero means 16.
	Conns int
	// PublishTimeout bounds the publish after each commit; zero means 2 s.
	// A publish that fails or times out is logged: with the change log on,
	// receivers read the change from it instead.
	PublishTimeout time.Duration
	// TxAttempts is how many times a write transaction runs before a
	// retryable conflict (a deadlock, a serialization failure, a column
	// changed since it was read) is given up and answered ErrContention;
	// zero means 10.
	TxAttempts int
	// NoChangeLog turns the change log (the outbox) off: changes are then
	// published after commit with no seq, a crash between commit and
	// publish loses them, and subscriptions cannot resume. For measuring
	// the log's cost, or a single node that needs none of that.
	NoChangeLog bool
}

// DB is a streamapi.Store on a SQL database.
type DB struct {
	dialect string
	w       *bun.DB // the single writer
	r       *bun.DB // read-only pool
	pub     streamapi.Publisher
	log     *slog.Logger

	changeLog      bool
	publishTimeout time.Duration
	txAttempts     int
	retries        atomic.Uint64 // transactions run again after a conflict
	logStmt        *sql.Stmt     // SQLite: the change log's insert, on the writer
	pgConfig       *pgx.ConnConfig
	notify         chan string // PostgreSQL NOTIFYs from triggers; nil on SQLite
	stop           context.CancelFunc
	done           chan struct{}

	// SQLite's committer (batch.go): nil elsewhere.
	wq    chan *writeReq
	wStop chan struct{}
	wDone chan struct{}
	wOnce sync.Once
	// pending are writes a committer that ended (runtime.Goexit) had not
	// run; its successor runs them first. Only committers touch it, one
	// after another.
	pending []*writeReq
	// batches and batchedWrites count the committer's transactions and
	// the writes they carried (read by tests).
	batches, batchedWrites atomic.Uint64

	tablesMu  sync.RWMutex
	insWanted atomic.Bool       // a table asked for its insert to be prepared (SQLite)
	tables    map[string]*table // by model label, for rows written by triggers
	stmts     []*sql.Stmt       // the tables' prepared reads, closed with the pools

	// pubMu is held from commit to the end of publishing when commit order
	// must also be publish order (SQLite, or no change log), so that
	// changes reach the publisher in commit order. With a change log on
	// PostgreSQL, commits run concurrently and receivers order changes by
	// seq.
	pubMu sync.Mutex
}

var (
	_ streamapi.Store          = (*DB)(nil)
	_ streamapi.ChangeLog      = (*DB)(nil)
	_ streamapi.ChangeNotifier = (*DB)(nil)
)

// Open connects to the database named by dsn: "sqlite:PATH" or a
// PostgreSQL URL ("postgres://user@host:5432/db?sslmode=disable"). It
// creates the change log's tables unless Options.NoChangeLog is set.
func Open(ctx context.Context, dsn string, opts Options) (*DB, error) {
	scheme, rest, ok := strings.Cut(dsn, ":")
	if !ok {
		return nil, fmt.Errorf("sqlstore: DSN %q has no scheme (want sqlite:PATH)", dsn)
	}
	db := &DB{pub: opts.Publisher, log: opts.Logger, changeLog: !opts.NoChangeLog, publishTimeout: opts.PublishTimeout, tables: map[string]*table{}}
	if db.publishTimeout <= 0 {
		db.publishTimeout = 2 * time.Second
	}
	db.txAttempts = opts.TxAttempts
	if db.txAttempts <= 0 {
		db.txAttempts = 10
	}
	if db.log == nil {
		db.log = slog.Default()
	}
	switch scheme {
	case "sqlite":
		if err := db.openSQLite(ctx, rest, opts); err != nil {
			return nil, err
		}
	case "postgres", "postgresql":
		if err := db.openPostgres(ctx, dsn, opts); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("sqlstore: unsupported database URL scheme: %q", scheme)
	}
	// On PostgreSQL the log's schema is made even with NoChangeLog, so
	// that migrations calling streamapi_track run either way.
	if db.changeLog || db.dialect == "postgres" {
		if err := db.initChangeLog(ctx); err != nil {
			db.closePools()
			return nil, fmt.Errorf("sqlstore: create the change log: %w", err)
		}
	}
	if db.dialect == "sqlite" {
		db.startCommitter()
	}
	if db.dialect == "postgres" && db.changeLog {
		lctx, stop := context.WithCancel(context.WithoutCancel(ctx))
		db.stop, db.done, db.notify = stop, make(chan struct{}), make(chan string, 1)
		go func() {
			defer close(db.done)
			db.listen(lctx)
		}()
	}
	return db, nil
}

func (db *DB) initChangeLog(ctx context.Context) error {
	if db.dialect == "postgres" {
		return db.pgInit(ctx)
	}
	for _, q := range sqliteSchema {
		if _, err := db.w.ExecContext(ctx, q); err != nil {
			return err
		}
	}
	// A log made before updates kept their prior object gains the column.
	var n int
	if err := db.w.QueryRowContext(ctx, `SELECT COUNT(*) FROM pragma_table_info('streamapi_changes') WHERE name = 'prior'`).Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		if _, err := db.w.ExecContext(ctx, `ALTER TABLE streamapi_changes ADD COLUMN prior TEXT`); err != nil {
			return err
		}
	}
	var err error
	db.logStmt, err = db.w.DB.PrepareContext(ctx, sqliteLogInsert)
	return err
}

// Notify implements streamapi.ChangeNotifier: on PostgreSQL, the channel
// receives (a model label, or "" for any) when a trigger has logged a write
// made outside streamapi, or the LISTEN connection has come back. It is nil
// on SQLite, where no other process writes.
func (db *DB) Notify() <-chan string {
	if db.notify == nil {
		return nil
	}
	return db.notify
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

// Dialect returns the SQL dialect's name: "sqlite" or "postgres".
func (db *DB) Dialect() string { return db.dialect }

// Bun returns the writer's bun.DB, for queries the Table interface does not
// cover, outside a write transaction. Writes made through it directly
// produce no events; use Tx and the tables instead. Inside DB.Tx use
// sqlstore.Tx(ctx) or IDB: on SQLite the transaction holds the only writer
// connection, so a query through Bun waits for it until ctx ends.
func (db *DB) Bun() *bun.DB { return db.w }

// Tx returns the transaction ctx carries, inside DB.Tx (and so in a
// resource's Validate, BeforeWrite, AfterWrite, BeforeDelete and detail
// actions) or DB.ReadTx (Safe custom actions), or nil outside one. SQL run on it is part of the transaction:
// it sees the transaction's own writes, holds its locks, and commits or
// rolls back with it. Reads of any table, and writes of tables that back no
// resource, belong here. A write through it to a resource's table is not a
// change: no event, no change-log row (the PostgreSQL trigger ignores the
// store's own sessions); write those through the resource or its Table.
// The transaction may run again after a conflict (DB.Tx), so what is done
// on it must be safe to do twice.
func Tx(ctx context.Context) bun.IDB {
	if st, _ := ctx.Value(txKey{}).(*txState); st != nil {
		return st.tx
	}
	return nil
}

// IDB returns what db's SQL runs on with ctx: the write transaction ctx
// carries (Tx), or else the writer's pool (Bun).
func (db *DB) IDB(ctx context.Context) bun.IDB {
	if st := db.txFrom(ctx); st != nil {
		return st.tx
	}
	return db.w
}

// Close stops listening and closes the pools.
func (db *DB) Close() error {
	db.stopCommitter()
	if db.stop != nil {
		db.stop()
		<-db.done
	}
	return db.closePools()
}

func (db *DB) closePools() error {
	if db.logStmt != nil {
		db.logStmt.Close()
	}
	db.tablesMu.Lock()
	for _, st := range db.stmts {
		st.Close()
	}
	db.stmts = nil
	db.tablesMu.Unlock()
	if db.r == db.w {
		return db.w.Close()
	}
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
	run := func() error {
		m := migrate.NewMigrator(db.w, ms, migrate.WithMarkAppliedOnSuccess(true))
		if err := m.Init(ctx); err != nil {
			return fmt.Errorf("migrate: init: %w", err)
		}
		if _, err := m.Migrate(ctx); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		return nil
	}
	if db.dialect == "postgres" {
		// Nodes starting together migrate one after the other.
		return db.withPGLock(ctx, run)
	}
	return run()
}

// txState is a write transaction in progress, carried by the context.
type txState struct {
	db       *DB
	tx       bun.Tx
	changes  []streamapi.Change
	batched  bool // run by SQLite's committer, with other callers' work
	readOnly bool // a read transaction (ReadTx): no writes, no row locks
	// reads are the rows the transaction read, as it read them (rows.go);
	// in a batch, those of the write being run.
	reads map[rowKey][]*image
	// lockReads makes every read lock its rows: a run after one that
	// failed on a column changed since it was read.
	lockReads bool
}

type lockReadsKey struct{}

// stmtCtx returns the context a statement runs with: ctx, or in a batched
// transaction ctx without its cancellation. SQLite rolls back the whole
// transaction, other callers' work included, when a statement is
// interrupted; the caller's cancellation still stops its function between
// statements.
func (db *DB) stmtCtx(ctx context.Context) context.Context {
	if st := db.txFrom(ctx); st != nil && st.batched {
		return context.WithoutCancel(ctx)
	}
	return ctx
}

type txKey struct{}

func (db *DB) txFrom(ctx context.Context) *txState {
	st, _ := ctx.Value(txKey{}).(*txState)
	if st != nil && st.db == db {
		return st
	}
	return nil
}

// Tx runs fn in one write transaction; see streamapi.Store. On SQLite the
// committer runs it, possibly in one transaction with other callers' (each
// in its own savepoint: batch.go). A transaction that fails with a
// retryable conflict (a PostgreSQL deadlock or serialization failure, a
// column changed since it was read, a batch rolled back by another write)
// is rolled back and fn runs again, up to Options.TxAttempts times in all,
// after a short random pause; past that the caller gets ErrContention.
func (db *DB) Tx(ctx context.Context, fn func(ctx context.Context) error) error {
	if st := db.txFrom(ctx); st != nil {
		if st.readOnly {
			return errWriteInRead
		}
		return fn(ctx)
	}
	for attempt := 1; ; attempt++ {
		var err error
		if db.wq != nil {
			err = db.batchTx(ctx, fn)
		} else {
			err = db.tx(ctx, fn)
		}
		if err == nil || !retryable(err) {
			return err
		}
		if errors.Is(err, errStale) {
			// Optimism lost once: the next run locks every row it reads,
			// so that it cannot lose the same way again.
			ctx = context.WithValue(ctx, lockReadsKey{}, true)
		}
		if attempt >= db.txAttempts {
			db.log.WarnContext(ctx, "write transaction kept conflicting; giving up", "attempts", attempt, "err", err)
			return fmt.Errorf("%w (%v)", ErrContention, err)
		}
		db.retries.Add(1)
		if err := sleepCtx(ctx, backoff(attempt)); err != nil {
			return err
		}
	}
}

// errWriteInRead answers a write attempted inside a read transaction.
var errWriteInRead = errors.New("sqlstore: a write inside a read transaction (DB.ReadTx: a Safe custom action)")

// ReadTx runs fn in one read-only transaction: every Table read made with
// the context handed to fn sees the same snapshot of the database, and
// none waits for the writer (on SQLite it runs on a read connection, not
// the single writer; on PostgreSQL at REPEATABLE READ, READ ONLY). A
// write inside it fails, and so does Tx; Lock reads without locking. Inside
// a write transaction, fn joins that one. Resources run Safe custom
// actions in it (streamapi.ReadTxer).
func (db *DB) ReadTx(ctx context.Context, fn func(ctx context.Context) error) error {
	if db.txFrom(ctx) != nil {
		return fn(ctx)
	}
	opts := &sql.TxOptions{ReadOnly: true}
	if db.dialect == "postgres" {
		opts.Isolation = sql.LevelRepeatableRead
	} else {
		// The read pool is query_only already; the driver takes no
		// read-only option.
		opts.ReadOnly = false
	}
	tx, err := db.r.BeginTx(ctx, opts)
	if err != nil {
		return fmt.Errorf("sqlstore: begin read: %w", mapErr(err))
	}
	defer func() { _ = tx.Rollback() }()
	if err := fn(context.WithValue(ctx, txKey{}, &txState{db: db, tx: tx, readOnly: true})); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlstore: commit read: %w", mapErr(err))
	}
	return nil
}

// tx runs fn once in its own transaction (PostgreSQL).
func (db *DB) tx(ctx context.Context, fn func(ctx context.Context) error) (err error) {
	tx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlstore: begin: %w", err)
	}
	st := &txState{db: db, tx: tx, lockReads: ctx.Value(lockReadsKey{}) != nil}
	committed := false
	defer func() {
		if !committed {
			_ = tx.Rollback()
		}
	}()
	if err := fn(context.WithValue(ctx, txKey{}, st)); err != nil {
		return err
	}
	if db.changeLog && len(st.changes) > 0 {
		if err := st.logChanges(ctx); err != nil {
			return fmt.Errorf("sqlstore: %w", mapErr(err))
		}
	}
	if !db.changeLog || db.dialect != "postgres" {
		db.pubMu.Lock()
		defer db.pubMu.Unlock()
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlstore: commit: %w", mapErr(err))
	}
	committed = true
	db.publish(ctx, st.changes)
	return nil
}

// publish hands committed changes to the publisher.
func (db *DB) publish(ctx context.Context, changes []streamapi.Change) {
	if db.pub == nil || len(changes) == 0 {
		return
	}
	// The write is durable; a publish failure must not turn it into an
	// error for the caller. With the change log on, receivers find the
	// missing seqs in the log.
	// Bounded: a broker that is down must not hold up writers (on
	// SQLite they queue behind pubMu); the change log covers the loss.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), db.publishTimeout)
	defer cancel()
	if err := db.pub.Publish(pctx, changes...); err != nil {
		db.log.ErrorContext(ctx, "publish changes", "count", len(changes), "err", err)
	}
}

// idb returns what a table call runs on: the context's transaction, or a pool.
func (db *DB) idb(ctx context.Context) bun.IDB {
	if st := db.txFrom(ctx); st != nil {
		return st.tx
	}
	return db.r
}
