package sqlstore_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/streamapi/streamapi"
	"github.com/streamapi/streamapi/internal/storetest"
	"github.com/streamapi/streamapi/internal/testenv"
	"github.com/streamapi/streamapi/store/sqlstore"
	"github.com/uptrace/bun"
)

// note's JSON names differ from its columns, and it has a timestamp: a row
// logged by the trigger must come out as the resource's JSON all the same.
type note struct {
	bun.BaseModel `bun:"table:sqlstore_note"`
	ID            int64     `bun:"id,pk,autoincrement" json:"id"`
	Body          string    `bun:"body,notnull" json:"text"`
	CreatedAt     time.Time `bun:"created_at,notnull" json:"created"`
	Hidden        string    `bun:"-" json:"-"`
}

// openNotes opens a store on dsn with the table sqlstore_note, tracked by
// the change-log trigger.
func openNotes(t *testing.T, dsn string) (*sqlstore.DB, streamapi.Table) {
	t.Helper()
	db := mustOpen(t, dsn, sqlstore.Options{})
	for _, q := range []string{
		`CREATE TABLE sqlstore_note (id bigserial PRIMARY KEY, body text NOT NULL, created_at timestamptz NOT NULL)`,
		`SELECT streamapi_track('sqlstore_note', 'test.note')`,
	} {
		if _, err := db.Bun().ExecContext(context.Background(), q); err != nil {
			t.Fatal(err)
		}
	}
	tb, err := db.Table((*note)(nil), "test.note")
	if err != nil {
		t.Fatal(err)
	}
	return db, tb
}

func TestPostgres_TriggerLogsOutsideWrites(t *testing.T) {
	dsn := testenv.Postgres(t)
	ctx := context.Background()
	db, tb := openNotes(t, dsn)
	// One write through the store, logged by the store (not twice).
	when := time.Date(2026, 11, 29, 14, 0, 0, 0, time.UTC)
	mine := &note{Body: "mine", CreatedAt: when}
	if err := tb.Insert(ctx, mine); err != nil {
		t.Fatal(err)
	}
	// The LISTEN connection rings once when it connects: wait for that.
	select {
	case <-db.Notify():
	case <-time.After(5 * time.Second):
	}
	// Three written as psql would, on another connection.
	other := testenv.SQL(t, dsn)
	for _, q := range []string{
		`INSERT INTO sqlstore_note (body, created_at) VALUES ('theirs', '2026-11-29 15:00:00+00')`,
		`UPDATE sqlstore_note SET body = 'edited' WHERE body = 'mine'`,
		`DELETE FROM sqlstore_note WHERE body = 'theirs'`,
	} {
		if _, err := other.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case m := <-db.Notify():
		if m != "test.note" {
			t.Fatalf("notified %q, want the model label test.note", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no notification within 5 s of a trigger's write")
	}
	got, err := db.ChangesAfter(ctx, "test.note", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		action, pk string
		data       map[string]any
	}{
		{"create", "1", map[string]any{"id": 1.0, "text": "mine", "created": "2026-11-29T14:00:00Z"}},
		{"create", "2", map[string]any{"id": 2.0, "text": "theirs", "created": "2026-11-29T15:00:00Z"}},
		{"update", "1", map[string]any{"id": 1.0, "text": "edited", "created": "2026-11-29T14:00:00Z"}},
		{"delete", "2", map[string]any{"id": 2.0, "text": "theirs", "created": "2026-11-29T15:00:00Z"}},
	}
	if len(got) != len(want) {
		t.Fatalf("%d changes logged, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		c := got[i]
		var data map[string]any
		if err := json.Unmarshal(c.Data, &data); err != nil {
			t.Fatalf("change %d data %s: %v", i, c.Data, err)
		}
		if w.action == "update" && !strings.Contains(string(c.Before), `"text":"mine"`) {
			t.Errorf("the trigger's update carries Before %s, want the row as it was, in the resource's JSON", c.Before)
		}
		if c.Seq != int64(i+1) || c.Action != w.action || string(c.PK) != w.pk || !equalJSON(data, w.data) {
			t.Errorf("change %d: seq %d %s pk %s %s; want seq %d %s pk %s %v", i, c.Seq, c.Action, c.PK, c.Data, i+1, w.action, w.pk, w.data)
		}
	}
}

func equalJSON(a, b map[string]any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

func TestPostgres_ConcurrentMigrate(t *testing.T) {
	dsn := testenv.Postgres(t)
	// Two nodes starting at once on an empty database.
	errs := make(chan error, 2)
	for i := 0; i < 2; i++ {
		go func() {
			db, err := sqlstore.Open(context.Background(), dsn, sqlstore.Options{})
			if err != nil {
				errs <- err
				return
			}
			defer db.Close()
			errs <- db.Migrate(context.Background(), storetest.Migrations())
		}()
	}
	for i := 0; i < 2; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// TestPostgres_SeqFollowsCommitOrder: a transaction that has taken a seq
// holds the model's counter until it commits, so a later writer waits and
// gets the next number: seqs are in commit order.
func TestPostgres_SeqFollowsCommitOrder(t *testing.T) {
	dsn := testenv.Postgres(t)
	ctx := context.Background()
	db, tb := openNotes(t, dsn)
	// A psql session writes (its trigger takes seq 1) and has not
	// committed yet.
	other := testenv.SQL(t, dsn)
	tx, err := other.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `INSERT INTO sqlstore_note (body, created_at) VALUES ('first', now())`); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- tb.Insert(ctx, &note{Body: "second", CreatedAt: time.Now()}) }()
	select {
	case err := <-done:
		t.Fatalf("the store committed (%v) while an earlier writer of the model held its seq", err)
	case <-time.After(300 * time.Millisecond):
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got, err := db.ChangesAfter(ctx, "test.note", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Seq != 1 || got[1].Seq != 2 || !strings.Contains(string(got[0].Data), `"first"`) || !strings.Contains(string(got[1].Data), `"second"`) {
		t.Fatalf("log %+v, want first (seq 1) then second (seq 2)", got)
	}
}
