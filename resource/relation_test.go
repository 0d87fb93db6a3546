package resource_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/streamapi/streamapi"
	"github.com/streamapi/streamapi/resource"
	"github.com/streamapi/streamapi/store/sqlstore"
	"github.com/uptrace/bun"
)

type Team struct {
	bun.BaseModel `bun:"table:rel_team" json:"-"`
	ID            int64  `bun:"id,pk,autoincrement" json:"id"`
	Team          int64  `bun:"team,notnull" json:"team"`
	User          string `bun:"user_id,notnull" json:"user"`
}

type Task struct {
	bun.BaseModel `bun:"table:rel_task" json:"-"`
	ID            int64  `bun:"id,pk,autoincrement" json:"id"`
	Team          *int64 `bun:"team" json:"team"`
	Public        bool   `bun:"public,notnull" json:"public"`
}

// relationStore declares teams (the membership) and tasks, visible to
// their team's members, and to everyone when public.
func relationStore(t *testing.T) (*sqlstore.DB, *resource.Resource[Team], *resource.Relation, *resource.Resource[Task]) {
	t.Helper()
	ctx := context.Background()
	db, err := sqlstore.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "rel.db"), sqlstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	for _, m := range []any{(*Team)(nil), (*Task)(nil)} {
		if _, err := db.Bun().NewCreateTable().Model(m).Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	teams, err := resource.New(resource.Config[Team]{Stream: "teams", Label: "test.team", Store: db})
	if err != nil {
		t.Fatal(err)
	}
	rel, err := resource.Membership(teams, "team", "user")
	if err != nil {
		t.Fatal(err)
	}
	tasks, err := resource.New(resource.Config[Task]{
		Stream: "tasks", Label: "test.task", Store: db,
		Scope: func(u *streamapi.User) resource.Q {
			return resource.Or(rel.Includes(u, "team"), resource.Where("public", true))
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	teams.Init(streamapi.Defaults{})
	tasks.Init(streamapi.Defaults{})
	return db, teams, rel, tasks
}

func teamChange(action string, id, team int64, user string) streamapi.Change {
	data, _ := json.Marshal(Team{ID: id, Team: team, User: user})
	return streamapi.Change{Model: "test.team", Action: action, PK: streamapi.EncodePK(id), Data: data}
}

// The index turns rows into transitions: a user joins a group with its
// first row and leaves it with its last; Peek tells without changing.
func TestRelation_Transitions(t *testing.T) {
	_, _, rel, _ := relationStore(t)
	tr := func(c streamapi.Change) string {
		peeked := rel.Peek(&c)
		got := rel.Apply(&c)
		if fmt.Sprint(peeked) != fmt.Sprint(got) {
			t.Fatalf("Peek %v, Apply %v", peeked, got)
		}
		return fmt.Sprint(got)
	}
	if got := tr(teamChange("create", 1, 7, "ann")); got != "[{ann 7 true}]" {
		t.Fatalf("first row: %s", got)
	}
	if got := tr(teamChange("create", 2, 7, "ann")); got != "[]" {
		t.Fatalf("a second row of the same pair: %s", got)
	}
	if got := tr(teamChange("delete", 1, 7, "ann")); got != "[]" {
		t.Fatalf("one of two rows gone: %s", got)
	}
	if !rel.Has("ann", "7") {
		t.Fatal("ann left team 7 with a row left")
	}
	if got := tr(teamChange("update", 2, 8, "ann")); got != "[{ann 7 false} {ann 8 true}]" {
		t.Fatalf("a row moved to another team: %s", got)
	}
	if got := tr(teamChange("update", 2, 8, "ann")); got != "[]" {
		t.Fatalf("an update that moves nothing: %s", got)
	}
	if got := tr(teamChange("delete", 2, 8, "ann")); got != "[{ann 8 false}]" {
		t.Fatalf("last row gone: %s", got)
	}
	if rel.Len() != 0 || rel.Has("ann", "8") || len(rel.Groups("ann")) != 0 {
		t.Fatalf("index not empty: %d rows, groups %v", rel.Len(), rel.Groups("ann"))
	}
	// Peek leaves the index as it was.
	c := teamChange("create", 3, 9, "bo")
	rel.Peek(&c)
	if rel.Has("bo", "9") || rel.Len() != 0 {
		t.Fatal("Peek changed the index")
	}
}

// A relation scope answers the same in SQL (lists, lookups) as in memory
// from the index (events), over random memberships and tasks, for every
// user, with the index loaded from the table as the server loads it.
func TestRelation_SQLAgreesWithIndex(t *testing.T) {
	db, teams, rel, tasks := relationStore(t)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(3, 5))
	users := []string{"ann", "bo", "cy", "di", `quo"te`, "ünï"}
	for range 60 {
		if err := teams.Create(ctx, &Team{Team: int64(rng.IntN(8)), User: users[rng.IntN(len(users))]}); err != nil {
			t.Fatal(err)
		}
	}
	for range 80 {
		task := &Task{Public: rng.IntN(5) == 0}
		if rng.IntN(6) > 0 {
			team := int64(rng.IntN(10))
			task.Team = &team
		}
		if err := tasks.Create(ctx, task); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := rel.Load(ctx); err != nil {
		t.Fatal(err)
	}
	all, err := tasks.List(ctx, streamapi.ListQuery{})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range append(users, "nobody") {
		u := &streamapi.User{ID: id}
		inSQL, err := tasks.ListFor(ctx, u, streamapi.ListQuery{})
		if err != nil {
			t.Fatal(err)
		}
		var want []int64
		for _, x := range inSQL {
			want = append(want, x.ID)
		}
		var got []int64
		for i := range all {
			data, _ := json.Marshal(&all[i])
			c := streamapi.Change{Model: "test.task", Action: streamapi.ChangeCreate, PK: streamapi.EncodePK(all[i].ID), Data: data}
			if _, after := tasks.Visibility(&c)(u); after {
				got = append(got, all[i].ID)
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%s: in memory %v, in SQL %v", id, got, want)
		}
		// Lookups (retrieve) decide in SQL too.
		for i := range all {
			ok, err := tasks.Exists(streamapi.WithUser(ctx, u), all[i].ID)
			if err != nil {
				t.Fatal(err)
			}
			if ok != slices.Contains(want, all[i].ID) {
				t.Fatalf("%s: Exists(%d) = %v", id, all[i].ID, ok)
			}
		}
	}
	_ = db
}

// A scope that names a field the model lacks fails New, not every request.
func TestRelation_ScopeNamesCheckedAtNew(t *testing.T) {
	db, _, rel, _ := relationStore(t)
	for name, scope := range map[string]func(u *streamapi.User) resource.Q{
		"relation": func(u *streamapi.User) resource.Q { return rel.Includes(u, "teem") },
		"filter":   func(u *streamapi.User) resource.Q { return resource.Where("publik", true) },
		"value":    func(u *streamapi.User) resource.Q { return resource.Where("public", "yes") },
	} {
		_, err := resource.New(resource.Config[Task]{Stream: "tasks2", Label: "test.task2", Store: db, Scope: scope})
		if err == nil || !strings.Contains(err.Error(), "resource tasks2: scope") {
			t.Errorf("%s: New answered %v", name, err)
		}
	}
	tasks, err := resource.New(resource.Config[Task]{Stream: "tasks3", Label: "test.task3", Store: db})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := resource.Membership(tasks, "team", "public"); err == nil || !strings.Contains(err.Error(), "must be a string") {
		t.Errorf("a bool user field: %v", err)
	}
	if _, err := resource.Membership(tasks, "squad", "public"); err == nil || !strings.Contains(err.Error(), `no stored field "squad"`) {
		t.Errorf("an unknown group field: %v", err)
	}
}

// One name space: a resource's List takes JSON names in Equal, Where and
// Order, as filters, scopes and the wire do; a column name is refused,
// naming it.
func TestList_TakesJSONNames(t *testing.T) {
	_, teams, _, _ := relationStore(t)
	ctx := context.Background()
	for i, u := range []string{"ann", "bo", "ann"} {
		if err := teams.Create(ctx, &Team{Team: int64(10 - i), User: u}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := teams.List(ctx, streamapi.ListQuery{
		Equal: map[string]any{"user": "ann"},
		Where: []streamapi.Cond{{Column: "team", Lookup: streamapi.LookupGTE, Value: int64(8)}},
		Order: []streamapi.Order{{Column: "team"}},
	})
	if err != nil || len(got) != 2 || got[0].Team != 8 || got[1].Team != 10 {
		t.Fatalf("by JSON names: %+v, %v", got, err)
	}
	if got, err := teams.List(ctx, streamapi.ListQuery{Order: []streamapi.Order{{Column: "pk", Desc: true}}}); err != nil || len(got) != 3 || got[0].ID != 3 {
		t.Fatalf("by pk, descending: %+v, %v", got, err)
	}
	for _, q := range []streamapi.ListQuery{
		{Equal: map[string]any{"user_id": "ann"}},
		{Where: []streamapi.Cond{{Any: []streamapi.Cond{{Column: "user_id", Lookup: streamapi.LookupExact, Value: "ann"}}}}},
		{Order: []streamapi.Order{{Column: "user_id"}}},
	} {
		_, err := teams.List(ctx, q)
		if streamapi.ErrorCode(err) != streamapi.EINVALID || !strings.Contains(err.Error(), `names "user_id", which is not a stored field`) {
			t.Errorf("column name in %+v: %v", q, err)
		}
	}
}

// A field the wire never shows (json:"-") has no JSON name: List reaches
// it by its column.
func TestList_HiddenFieldByColumn(t *testing.T) {
	items := newItems(t, resource.Config[Item]{})
	ctx := context.Background()
	for _, secret := range []string{"s1", "s2"} {
		if err := items.Create(ctx, &Item{Name: "n", Secret: secret}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := items.List(ctx, streamapi.ListQuery{Equal: map[string]any{"secret": "s2"}})
	if err != nil || len(got) != 1 || got[0].Secret != "s2" {
		t.Fatalf("by a hidden field's column: %+v, %v", got, err)
	}
}

// The resume grace at its edges: a resume 1 ns before the grace ends is
// refused whatever its since, one at its end passes on its since; the cut's
// seq itself is refused, the seq after it passes; a since from before the
// index started is refused.
func TestRelation_ResumeGraceBoundaries(t *testing.T) {
	_, _, rel, _ := relationStore(t)
	t0 := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	now := t0
	resource.SetNow(rel, func() time.Time { return now })
	rel.SetResumeGrace(30 * time.Second)
	rel.Noted("", "test.task", 10) // the index started at seq 10
	rel.Noted("ann", "test.task", 40)
	for _, c := range []struct {
		after time.Duration
		since int64
		want  bool
	}{
		{0, 100, true},
		{30*time.Second - time.Nanosecond, 100, true},
		{30 * time.Second, 100, false},
		{30 * time.Second, 41, false},
		{30 * time.Second, 40, true},
		{30 * time.Second, 9, true},
		{time.Hour, 41, false},
		{time.Hour, 10, true},
	} {
		now = t0.Add(c.after)
		if got := rel.ChangedAfter("ann", "test.task", c.since); got != c.want {
			t.Errorf("%v after ann's change, since %d: %v, want %v", c.after, c.since, got, c.want)
		}
	}
	now = t0
	if rel.ChangedAfter("bo", "test.task", 11) {
		t.Error("bo, who had no change, is refused")
	}
	if !rel.ChangedAfter("bo", "test.task", 9) {
		t.Error("a since from before the index started passes")
	}
}
