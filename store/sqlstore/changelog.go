package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"time"

	"github.com/streamapi/streamapi"
	"github.com/uptrace/bun"
)

// The change log (outbox) is created by Open:
//
//	streamapi_changes  (model, seq, action, pk, data, kind, at)
//	streamapi_seq      (model, seq)  PostgreSQL: the last seq of each model
//
// A transaction's changes are written just before it commits. On
// PostgreSQL, for each model in name order, one upsert of streamapi_seq
// takes the next block of numbers; its row lock is held until commit, so a
// later writer of the same model waits for it and numbers follow commit
// order with no gap (a rollback returns its numbers). On SQLite the
// transaction holds the database's only write lock, so each change is
// numbered MAX(seq)+1 in the statement that writes it, and the trim keeps
// each model's newest row. Rows written by triggers (PostgreSQL, for writes
// made outside streamapi) hold the table row as the database sees it (kind
// "row") and are turned into the resource's JSON when read.

var sqliteSchema = []string{
	`CREATE TABLE IF NOT EXISTS streamapi_changes (
	model TEXT NOT NULL,
	seq INTEGER NOT NULL,
	action TEXT NOT NULL,
	pk TEXT NOT NULL,
	data TEXT NOT NULL,
	kind TEXT NOT NULL DEFAULT 'api',
	at INTEGER NOT NULL,
	prior TEXT,
	PRIMARY KEY (model, seq)
) WITHOUT ROWID`,
	`CREATE INDEX IF NOT EXISTS streamapi_changes_at ON streamapi_changes (at)`,
	`CREATE INDEX IF NOT EXISTS streamapi_changes_pk ON streamapi_changes (model, pk, seq)`,
}

// changeRow is one row of streamapi_changes.
type changeRow struct {
	bun.BaseModel `bun:"table:streamapi_changes"`
	Model         string  `bun:"model,pk"`
	Seq           int64   `bun:"seq,pk"`
	Action        string  `bun:"action"`
	PK            string  `bun:"pk"`
	Data          string  `bun:"data"`
	Kind          string  `bun:"kind"`
	At            int64   `bun:"at"`    // unix microseconds
	Prior         *string `bun:"prior"` // an update's object before it
}

// logChanges numbers the transaction's changes and writes them to the
// change log, in the transaction, just before it commits.
func (st *txState) logChanges(ctx context.Context) error {
	var err error
	if st.db.dialect == "sqlite" {
		err = st.logSQLite(ctx)
	} else {
		err = st.logPostgres(ctx)
	}
	if err != nil {
		return err
	}
	// Publish in seq order within each model, whatever the write order.
	sort.SliceStable(st.changes, func(a, b int) bool {
		ca, cb := &st.changes[a], &st.changes[b]
		return ca.Model < cb.Model || ca.Model == cb.Model && ca.Seq < cb.Seq
	})
	return nil
}

// sqliteLogInsert numbers and writes one change in one statement: the
// transaction holds SQLite's only write lock, so MAX(seq)+1 is the next
// number, and the trim always keeps each model's newest row.
const sqliteLogInsert = `INSERT INTO streamapi_changes (model, seq, action, pk, data, kind, at, prior)
SELECT ?, COALESCE(MAX(seq), 0) + 1, ?, ?, ?, 'api', ?, ? FROM streamapi_changes WHERE model = ?
RETURNING seq`

func (st *txState) logSQLite(ctx context.Context) error {
	now := time.Now().UnixMicro()
	// Prepared once on the writer connection: preparing it anew took a
	// quarter of a write's time.
	stmt := st.tx.StmtContext(ctx, st.db.logStmt)
	for i := range st.changes {
		c := &st.changes[i]
		row := stmt.QueryRowContext(ctx, c.Model, c.Action, string(c.PK), string(c.Data), now, prior(c.Before), c.Model)
		if err := row.Scan(&c.Seq); err != nil {
			return fmt.Errorf("change log: write %s: %w", c.Model, err)
		}
	}
	return nil
}

// pgLogInsert takes a block of n numbers for one model from streamapi_seq
// (whose row lock, held until commit, orders the model's writers) and
// writes the model's changes, in one round trip.
const pgLogInsert = `WITH s AS (
	INSERT INTO streamapi_seq AS q (model, seq) VALUES ($1, $2)
	ON CONFLICT (model) DO UPDATE SET seq = q.seq + excluded.seq
	RETURNING seq
)
INSERT INTO streamapi_changes (model, seq, action, pk, data, kind, at, prior)
SELECT $1, s.seq - $2 + v.ord, v.action, v.pk, v.data, 'api', $3, v.prior
FROM s, unnest($4::text[], $5::text[], $6::text[], $7::text[]) WITH ORDINALITY AS v(action, pk, data, prior, ord)
RETURNING seq`

// logPostgres numbers and writes the changes, model by model in name order
// (one lock order for every writer: no deadlock).
func (st *txState) logPostgres(ctx context.Context) error {
	byModel := map[string][]int{}
	for i, c := range st.changes {
		byModel[c.Model] = append(byModel[c.Model], i)
	}
	models := make([]string, 0, len(byModel))
	for m := range byModel {
		models = append(models, m)
	}
	sort.Strings(models)
	now := time.Now().UnixMicro()
	for _, m := range models {
		idx := byModel[m]
		actions, pks, datas, priors := make([]string, len(idx)), make([]string, len(idx)), make([]string, len(idx)), make([]*string, len(idx))
		for j, i := range idx {
			c := &st.changes[i]
			actions[j], pks[j], datas[j], priors[j] = c.Action, string(c.PK), string(c.Data), prior(c.Before)
		}
		var last int64
		// ORDINALITY numbers the rows 1..n; the statement returns them
		// in any order, so take the highest.
		rows, err := st.tx.Tx.QueryContext(ctx, pgLogInsert, m, len(idx), now, actions, pks, datas, priors)
		if err != nil {
			return fmt.Errorf("change log: write %s: %w", m, err)
		}
		for rows.Next() {
			var seq int64
			if err := rows.Scan(&seq); err != nil {
				rows.Close()
				return fmt.Errorf("change log: write %s: %w", m, err)
			}
			last = max(last, seq)
		}
		if err := rows.Close(); err != nil {
			return fmt.Errorf("change log: write %s: %w", m, err)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("change log: write %s: %w", m, err)
		}
		first := last - int64(len(idx)) + 1
		for j, i := range idx {
			st.changes[i].Seq = first + int64(j)
		}
	}
	return nil
}

// prior is an update's Before for the log's prior column: NULL when none.
func prior(b json.RawMessage) *string {
	if len(b) == 0 {
		return nil
	}
	s := string(b)
	return &s
}

// ChangesAfter implements streamapi.ChangeLog.
func (db *DB) ChangesAfter(ctx context.Context, model string, after int64, limit int) ([]streamapi.Change, error) {
	if !db.changeLog {
		return nil, errNoChangeLog
	}
	var rows []changeRow
	q := db.r.NewSelect().Model(&rows).
		Where("model = ?", model).Where("seq > ?", after).
		Order("seq ASC")
	if limit > 0 {
		q = q.Limit(int64(limit))
	}
	if err := q.Scan(ctx); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("change log: read %s after %d: %w", model, after, err)
	}
	return db.changes(ctx, rows), nil
}

// ChangesOf implements streamapi.ChangeLog, from the index on (model, pk,
// seq).
func (db *DB) ChangesOf(ctx context.Context, model string, pk json.RawMessage, after, upto int64, limit int) ([]streamapi.Change, error) {
	if !db.changeLog {
		return nil, errNoChangeLog
	}
	var rows []changeRow
	q := db.r.NewSelect().Model(&rows)
	if db.dialect == "sqlite" {
		// SQLite's planner, without statistics, would take the primary
		// key's seq range and read every change in it.
		q = q.ModelTableExpr("streamapi_changes AS change_row INDEXED BY streamapi_changes_pk")
	}
	q = q.Where("model = ?", model).Where("pk = ?", string(pk)).
		Where("seq > ?", after).Where("seq <= ?", upto).
		Order("seq ASC")
	if limit > 0 {
		q = q.Limit(int64(limit))
	}
	if err := q.Scan(ctx); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("change log: read %s %s after %d: %w", model, pk, after, err)
	}
	return db.changes(ctx, rows), nil
}

// changes turns log rows into changes: rows written by a trigger get the
// resource's JSON.
func (db *DB) changes(ctx context.Context, rows []changeRow) []streamapi.Change {
	out := make([]streamapi.Change, 0, len(rows))
	for _, r := range rows {
		c := streamapi.Change{Model: r.Model, Seq: r.Seq, Action: r.Action, PK: json.RawMessage(r.PK), Data: json.RawMessage(r.Data)}
		if r.Prior != nil {
			c.Before = json.RawMessage(*r.Prior)
		}
		if r.Kind == "row" {
			if err := db.fromRow(&c); err != nil {
				// Never the raw row: it may hold columns the resource
				// does not show. The event keeps its place, with no data.
				db.log.ErrorContext(ctx, "change log: decode a row written by a trigger", "model", r.Model, "seq", r.Seq, "err", err)
				c.Data = json.RawMessage("null")
			}
		}
		out = append(out, c)
	}
	return out
}

// Bounds implements streamapi.ChangeLog.
func (db *DB) Bounds(ctx context.Context, model string) (first, last int64, err error) {
	if !db.changeLog {
		return 0, 0, errNoChangeLog
	}
	var lo sql.NullInt64
	// Inside a transaction (a read snapshot), the bounds it sees.
	var qr interface {
		QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	} = db.r
	if st := db.txFrom(ctx); st != nil {
		qr = st.tx
	}
	q := `SELECT
	COALESCE((SELECT seq FROM streamapi_seq WHERE model = ?), 0),
	(SELECT MIN(seq) FROM streamapi_changes WHERE model = ?)`
	if db.dialect == "sqlite" {
		// Two subqueries, each one step of the primary key: MAX and MIN
		// in one SELECT read every row of the model.
		q = `SELECT COALESCE((SELECT seq FROM streamapi_changes WHERE model = ? ORDER BY seq DESC LIMIT 1), 0),
	(SELECT seq FROM streamapi_changes WHERE model = ? ORDER BY seq LIMIT 1)`
	}
	err = qr.QueryRowContext(ctx, q, model, model).Scan(&last, &lo)
	if err != nil {
		return 0, 0, fmt.Errorf("change log: bounds of %s: %w", model, err)
	}
	if !lo.Valid {
		return last + 1, last, nil
	}
	return lo.Int64, last, nil
}

// Trim implements streamapi.ChangeLog. It deletes, per model, a prefix:
// every change up to the newest one committed before t, so that the log
// never has a hole even if the clocks that stamped the changes disagree.
// Both steps use an index (at, then the primary key), so a trim costs what
// it deletes. On SQLite, where the newest row of a model holds its last
// number, that row stays whatever its age.
func (db *DB) Trim(ctx context.Context, before time.Time) (int64, error) {
	if !db.changeLog {
		return 0, errNoChangeLog
	}
	if db.dialect == "postgres" {
		res, err := db.w.DB.ExecContext(ctx, `DELETE FROM streamapi_changes AS c
USING (SELECT model, MAX(seq) AS upto FROM streamapi_changes WHERE at < $1 GROUP BY model) AS t
WHERE c.model = t.model AND c.seq <= t.upto`, before.UnixMicro())
		if err != nil {
			return 0, fmt.Errorf("change log: trim: %w", err)
		}
		n, _ := res.RowsAffected()
		return n, nil
	}
	type prefix struct {
		model string
		upto  int64
	}
	var ps []prefix
	rows, err := db.r.QueryContext(ctx, `SELECT model, MAX(seq) FROM streamapi_changes WHERE at < ? GROUP BY model`, before.UnixMicro())
	if err != nil {
		return 0, fmt.Errorf("change log: trim: %w", err)
	}
	for rows.Next() {
		var p prefix
		if err := rows.Scan(&p.model, &p.upto); err != nil {
			rows.Close()
			return 0, fmt.Errorf("change log: trim: %w", err)
		}
		ps = append(ps, p)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return 0, fmt.Errorf("change log: trim: %w", err)
	}
	var total int64
	for _, p := range ps {
		res, err := db.w.DB.ExecContext(ctx, `DELETE FROM streamapi_changes WHERE model = ? AND seq <= ?
AND seq < (SELECT MAX(seq) FROM streamapi_changes WHERE model = ?)`, p.model, p.upto, p.model)
		if err != nil {
			return total, fmt.Errorf("change log: trim %s: %w", p.model, err)
		}
		n, _ := res.RowsAffected()
		total += n
	}
	return total, nil
}

// trimChunk bounds the rows one statement of TrimKeep deletes, so that a
// first trim of a large log holds no lock for long.
var trimChunk int64 = 10_000

// TrimKeep implements streamapi.ChangeLog: the model's changes up to its
// last seq less keep go, a chunk of seqs per statement (the primary key's
// range).
func (db *DB) TrimKeep(ctx context.Context, model string, keep int64) (int64, error) {
	if !db.changeLog {
		return 0, errNoChangeLog
	}
	first, last, err := db.Bounds(ctx, model)
	if err != nil {
		return 0, err
	}
	upto := last - max(keep, 1)
	var total int64
	for from := first; from <= upto; from += trimChunk {
		to := min(from+trimChunk-1, upto)
		q := "DELETE FROM streamapi_changes WHERE model = ? AND seq >= ? AND seq <= ?"
		if db.dialect == "postgres" {
			q = "DELETE FROM streamapi_changes WHERE model = $1 AND seq >= $2 AND seq <= $3"
		}
		res, err := db.w.DB.ExecContext(ctx, q, model, from, to)
		if err != nil {
			return total, fmt.Errorf("change log: trim %s to %d: %w", model, keep, err)
		}
		n, _ := res.RowsAffected()
		total += n
	}
	return total, nil
}

var errNoChangeLog = errors.New("sqlstore: the change log is off (Options.NoChangeLog)")

// fromRow turns a change written by a trigger, whose data is the table row
// as JSON keyed by column, into the resource's JSON, through the model's
// struct: the same encoding as a change made through the table.
func (db *DB) fromRow(c *streamapi.Change) error {
	db.tablesMu.RLock()
	t := db.tables[c.Model]
	db.tablesMu.RUnlock()
	if t == nil {
		return fmt.Errorf("no table is registered for model %s", c.Model)
	}
	if len(c.Before) > 0 {
		b, _, err := t.rowJSON(c.Before)
		if err != nil {
			return fmt.Errorf("row before: %w", err)
		}
		c.Before = b
	}
	data, pk, err := t.rowJSON(c.Data)
	if err != nil {
		return err
	}
	c.Data, c.PK = data, pk
	return nil
}

// rowJSON turns a row as JSON keyed by column into the model's JSON and
// its canonical pk.
func (t *table) rowJSON(row json.RawMessage) (json.RawMessage, json.RawMessage, error) {
	var cols map[string]json.RawMessage
	if err := json.Unmarshal(row, &cols); err != nil {
		return nil, nil, fmt.Errorf("row data: %w", err)
	}
	v := reflect.New(t.typ)
	for _, f := range t.meta.Fields {
		raw, ok := cols[f.Name]
		if !ok || string(raw) == "null" {
			continue
		}
		fv := v.Elem().FieldByIndex(f.Index)
		if err := json.Unmarshal(raw, fv.Addr().Interface()); err == nil {
			continue
		}
		// Not the field's JSON form (a timestamp without a zone, say):
		// let bun scan it the way it scans the column.
		var src any = string(raw)
		var s string
		if json.Unmarshal(raw, &s) == nil {
			src = s
		}
		if err := f.ScanValue(v.Elem(), src); err != nil {
			return nil, nil, fmt.Errorf("column %s: %w", f.Name, err)
		}
	}
	data, err := json.Marshal(v.Interface())
	if err != nil {
		return nil, nil, fmt.Errorf("encode: %w", err)
	}
	return data, streamapi.EncodePK(v.Elem().FieldByIndex(t.pk.Index).Interface()), nil
}
