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

// The change log (outbox) is two tables, created by Open:
//
//	streamapi_seq      (model, seq)  the last seq assigned to each model
//	streamapi_changes  (model, seq, action, pk, data, kind, at)
//
// A transaction's changes are written just before it commits: for each
// model, in name order, one upsert of streamapi_seq takes the next block of
// numbers. On PostgreSQL the upsert's row lock is held until commit, so a
// later writer of the same model waits for it and numbers follow commit
// order with no gap (a rollback returns its numbers); on SQLite the single
// writer gives the same. Rows written by triggers (PostgreSQL, for writes
// made outside streamapi) hold the table row as the database sees it (kind
// "row") and are turned into the resource's JSON when read.

var sqliteSchema = []string{
	`CREATE TABLE IF NOT EXISTS streamapi_seq (
	model TEXT PRIMARY KEY,
	seq INTEGER NOT NULL
) WITHOUT ROWID`,
	`CREATE TABLE IF NOT EXISTS streamapi_changes (
	model TEXT NOT NULL,
	seq INTEGER NOT NULL,
	action TEXT NOT NULL,
	pk TEXT NOT NULL,
	data TEXT NOT NULL,
	kind TEXT NOT NULL DEFAULT 'api',
	at INTEGER NOT NULL,
	PRIMARY KEY (model, seq)
) WITHOUT ROWID`,
	`CREATE INDEX IF NOT EXISTS streamapi_changes_at ON streamapi_changes (at)`,
}

// changeRow is one row of streamapi_changes.
type changeRow struct {
	bun.BaseModel `bun:"table:streamapi_changes"`
	Model         string `bun:"model,pk"`
	Seq           int64  `bun:"seq,pk"`
	Action        string `bun:"action"`
	PK            string `bun:"pk"`
	Data          string `bun:"data"`
	Kind          string `bun:"kind"`
	At            int64  `bun:"at"` // unix microseconds
}

// logChanges numbers the transaction's changes and writes them to the
// change log, in the transaction, just before it commits.
func (st *txState) logChanges(ctx context.Context) error {
	byModel := map[string][]int{}
	for i, c := range st.changes {
		byModel[c.Model] = append(byModel[c.Model], i)
	}
	models := make([]string, 0, len(byModel))
	for m := range byModel {
		models = append(models, m)
	}
	sort.Strings(models) // one lock order for every writer: no deadlock
	now := time.Now().UnixMicro()
	rows := make([]changeRow, 0, len(st.changes))
	for _, m := range models {
		idx := byModel[m]
		var last int64
		err := st.tx.NewRaw(`INSERT INTO streamapi_seq AS q (model, seq) VALUES (?, ?)
ON CONFLICT (model) DO UPDATE SET seq = q.seq + excluded.seq RETURNING seq`, m, len(idx)).Scan(ctx, &last)
		if err != nil {
			return fmt.Errorf("change log: number %s: %w", m, err)
		}
		first := last - int64(len(idx)) + 1
		for j, i := range idx {
			c := &st.changes[i]
			c.Seq = first + int64(j)
			rows = append(rows, changeRow{Model: m, Seq: c.Seq, Action: c.Action, PK: string(c.PK), Data: string(c.Data), Kind: "api", At: now})
		}
	}
	if _, err := st.tx.NewInsert().Model(&rows).Exec(ctx); err != nil {
		return fmt.Errorf("change log: write: %w", err)
	}
	// Publish in seq order within each model, whatever the write order.
	sort.SliceStable(st.changes, func(a, b int) bool {
		ca, cb := &st.changes[a], &st.changes[b]
		return ca.Model < cb.Model || ca.Model == cb.Model && ca.Seq < cb.Seq
	})
	return nil
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
	out := make([]streamapi.Change, 0, len(rows))
	for _, r := range rows {
		c := streamapi.Change{Model: r.Model, Seq: r.Seq, Action: r.Action, PK: json.RawMessage(r.PK), Data: json.RawMessage(r.Data)}
		if r.Kind == "row" {
			if err := db.fromRow(&c); err != nil {
				db.log.ErrorContext(ctx, "change log: decode a row written by a trigger", "model", model, "seq", r.Seq, "err", err)
			}
		}
		out = append(out, c)
	}
	return out, nil
}

// Bounds implements streamapi.ChangeLog.
func (db *DB) Bounds(ctx context.Context, model string) (first, last int64, err error) {
	if !db.changeLog {
		return 0, 0, errNoChangeLog
	}
	var lo sql.NullInt64
	err = db.r.NewRaw(`SELECT
	COALESCE((SELECT seq FROM streamapi_seq WHERE model = ?), 0),
	(SELECT MIN(seq) FROM streamapi_changes WHERE model = ?)`, model, model).Scan(ctx, &last, &lo)
	if err != nil {
		return 0, 0, fmt.Errorf("change log: bounds of %s: %w", model, err)
	}
	if !lo.Valid {
		return last + 1, last, nil
	}
	return lo.Int64, last, nil
}

// Trim implements streamapi.ChangeLog.
func (db *DB) Trim(ctx context.Context, before time.Time) (int64, error) {
	if !db.changeLog {
		return 0, errNoChangeLog
	}
	res, err := db.w.NewDelete().Model((*changeRow)(nil)).Where("at < ?", before.UnixMicro()).Exec(ctx)
	if err != nil {
		return 0, fmt.Errorf("change log: trim: %w", err)
	}
	n, _ := res.RowsAffected()
	return n, nil
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
	var cols map[string]json.RawMessage
	if err := json.Unmarshal(c.Data, &cols); err != nil {
		return fmt.Errorf("row data: %w", err)
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
			return fmt.Errorf("column %s: %w", f.Name, err)
		}
	}
	data, err := json.Marshal(v.Interface())
	if err != nil {
		return fmt.Errorf("encode: %w", err)
	}
	c.Data = data
	c.PK = streamapi.EncodePK(v.Elem().FieldByIndex(t.pk.Index).Interface())
	return nil
}
