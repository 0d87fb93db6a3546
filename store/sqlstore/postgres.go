package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"
)

// pgLockKey is the advisory lock that serializes schema set-up and
// migrations between nodes starting together.
const pgLockKey = 7_311_550_213

// notifyChannel is the channel triggers NOTIFY with the model label.
const notifyChannel = "streamapi_changes"

var pgSchema = []string{
	`CREATE TABLE IF NOT EXISTS streamapi_seq (
	model text PRIMARY KEY,
	seq bigint NOT NULL
)`,
	`CREATE TABLE IF NOT EXISTS streamapi_changes (
	model text NOT NULL,
	seq bigint NOT NULL,
	action text NOT NULL,
	pk text NOT NULL,
	data text NOT NULL,
	kind text NOT NULL DEFAULT 'api',
	at bigint NOT NULL,
	prior text,
	PRIMARY KEY (model, seq)
)`,
	`ALTER TABLE streamapi_changes ADD COLUMN IF NOT EXISTS prior text`,
	`CREATE INDEX IF NOT EXISTS streamapi_changes_at ON streamapi_changes (at)`,
	// Resumes of one object's subscriptions read its changes alone.
	`CREATE INDEX IF NOT EXISTS streamapi_changes_pk ON streamapi_changes (model, pk, seq)`,
	// The trigger function: one change-log row per written row, numbered
	// like the store's own, then NOTIFY. It skips the store's own writes
	// (which log themselves, in the resource's JSON): the store's
	// connections carry the setting streamapi.writer = on.
	`CREATE OR REPLACE FUNCTION streamapi_log_row() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
	m text := TG_ARGV[0];
	pkcol text := TG_ARGV[1];
	r jsonb;
	old_row jsonb;
	act text;
	s bigint;
BEGIN
	IF current_setting('streamapi.writer', true) = 'on' THEN
		RETURN NULL;
	END IF;
	IF TG_OP = 'DELETE' THEN
		r := to_jsonb(OLD); act := 'delete';
	ELSIF TG_OP = 'UPDATE' THEN
		r := to_jsonb(NEW); old_row := to_jsonb(OLD); act := 'update';
	ELSE
		r := to_jsonb(NEW); act := 'create';
	END IF;
	INSERT INTO streamapi_seq AS q (model, seq) VALUES (m, 1)
		ON CONFLICT (model) DO UPDATE SET seq = q.seq + 1
		RETURNING q.seq INTO s;
	INSERT INTO streamapi_changes (model, seq, action, pk, data, kind, at, prior)
		VALUES (m, s, act, (r -> pkcol)::text, r::text, 'row',
			(extract(epoch FROM clock_timestamp()) * 1000000)::bigint, old_row::text);
	PERFORM pg_notify('streamapi_changes', m);
	RETURN NULL;
END $$`,
	// streamapi_track(table, model label, pk column) is the opt-in: a
	// migration calls it to have writes made outside streamapi logged.
	`CREATE OR REPLACE FUNCTION streamapi_track(tbl regclass, model text, pkcol text DEFAULT 'id') RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE format('DROP TRIGGER IF EXISTS streamapi_changes ON %s', tbl);
	EXECUTE format('CREATE TRIGGER streamapi_changes AFTER INSERT OR UPDATE OR DELETE ON %s
		FOR EACH ROW EXECUTE FUNCTION streamapi_log_row(%L, %L)', tbl, model, pkcol);
END $$`,
}

func (db *DB) openPostgres(ctx context.Context, dsn string, opts Options) error {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return fmt.Errorf("sqlstore: postgres URL: %w", err)
	}
	// Every connection of the store says it is streamapi's: the change-log
	// trigger leaves its writes to the store, which logs them in the
	// resource's JSON. Set at connect, it costs no round trip and holds
	// whenever a table is tracked, even after a node started.
	cfg.RuntimeParams["streamapi.writer"] = "on"
	sqldb := stdlib.OpenDB(*cfg)
	n := opts.Conns
	if n <= 0 {
		n = 16
	}
	sqldb.SetMaxOpenConns(n)
	sqldb.SetMaxIdleConns(n)
	sqldb.SetConnMaxIdleTime(5 * time.Minute)
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := sqldb.PingContext(pctx); err != nil {
		sqldb.Close()
		return fmt.Errorf("sqlstore: connect to postgres %s/%s: %w", cfg.Host, cfg.Database, err)
	}
	db.dialect = "postgres"
	db.w = bun.NewDB(sqldb, pgdialect.New())
	db.r = db.w
	db.pgConfig = cfg
	return nil
}

// pgInit creates the change log's tables and functions, under an advisory
// lock so that nodes starting together do not race.
func (db *DB) pgInit(ctx context.Context) error {
	return db.w.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock(?)", pgLockKey); err != nil {
			return err
		}
		for _, q := range pgSchema {
			if _, err := tx.ExecContext(ctx, q); err != nil {
				return err
			}
		}
		return nil
	})
}

// withPGLock runs fn holding the session advisory lock on a connection of
// its own, so that fn may use the pool.
func (db *DB) withPGLock(ctx context.Context, fn func() error) error {
	c, err := db.w.Conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.ExecContext(ctx, "SELECT pg_advisory_lock(?)", pgLockKey); err != nil {
		return err
	}
	defer c.ExecContext(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock(?)", pgLockKey) //nolint:errcheck // the session ends with c anyway
	return fn()
}

// listen forwards the trigger's NOTIFYs to db.notify until ctx ends,
// reconnecting after a lost connection. Notifications coalesce: the channel
// is a doorbell, the change log is read afterwards.
func (db *DB) listen(ctx context.Context) {
	defer close(db.notify)
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := db.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		db.log.WarnContext(ctx, "postgres LISTEN connection lost; reconnecting", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (db *DB) listenOnce(ctx context.Context) error {
	c, err := pgx.ConnectConfig(ctx, db.pgConfig.Copy())
	if err != nil {
		return err
	}
	defer c.Close(context.WithoutCancel(ctx))
	if _, err := c.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		return err
	}
	// Anything written while the connection was down is caught by the
	// reader's next poll; a wake-up now shortens that.
	db.ring("")
	for {
		n, err := c.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		db.ring(n.Payload)
	}
}

func (db *DB) ring(model string) {
	select {
	case db.notify <- model:
	default:
	}
}

// pgConstraint is the SQLSTATE class of integrity constraint violations.
const pgConstraint = "23"

func pgConflict(err error) (*pgconn.PgError, bool) {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && len(pe.Code) == 5 && pe.Code[:2] == pgConstraint {
		return pe, true
	}
	return nil, false
}
