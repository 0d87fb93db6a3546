package loadtest

import "testing"

// Each judgement catches the fault it is for, and passes a correct run.
func TestCompareSeqs(t *testing.T) {
	for _, c := range []struct {
		name      string
		want, got []int64
		diff      Diff
	}{
		{"exact", []int64{2, 5, 9}, []int64{2, 5, 9}, Diff{}},
		{"none expected, none got", nil, nil, Diff{}},
		{"one lost", []int64{2, 5, 9}, []int64{2, 9}, Diff{Missing: 1}},
		{"one twice", []int64{2, 5, 9}, []int64{2, 5, 5, 9}, Diff{Duplicates: 1}},
		{"swapped", []int64{2, 5, 9}, []int64{2, 9, 5}, Diff{OutOfOrder: 1}},
		{"one not ours", []int64{2, 5}, []int64{2, 3, 5}, Diff{Unexpected: 1}},
		{"replayed again after a resume", []int64{1, 2, 3}, []int64{1, 2, 2, 3}, Diff{Duplicates: 1}},
	} {
		if d := compareSeqs(c.want, c.got); d != c.diff {
			t.Errorf("%s: %+v, want %+v", c.name, d, c.diff)
		}
	}
}

func TestExpectedSeqs(t *testing.T) {
	rec := []eventRec{
		{1, "create", "1"}, {2, "update", "1"}, {3, "update", "2"}, {4, "update", "1"},
		{5, "delete", "2"}, {6, "update", "1"}, {7, "update", "1"},
	}
	updatesOf1 := func(e eventRec) bool { return e.Action == "update" && e.PK == "1" }
	got := expectedSeqs(rec, span{1, 7}, nil, updatesOf1)
	if len(got) != 4 || got[0] != 2 || got[3] != 7 {
		t.Fatalf("window (1,7]: %v, want [2 4 6 7]", got)
	}
	// Outside the window, and in a resync's gap, nothing is owed.
	got = expectedSeqs(rec, span{2, 6}, []span{{3, 4}}, updatesOf1)
	if len(got) != 1 || got[0] != 6 {
		t.Fatalf("window (2,6] less (3,4]: %v, want [6]", got)
	}
}

func TestRecorderChecks(t *testing.T) {
	if d := compareSeqs(contiguous(span{10, 13}), []int64{11, 12, 13}); !d.Zero() {
		t.Fatalf("a complete record: %+v", d)
	}
	if d := compareSeqs(contiguous(span{10, 13}), []int64{11, 13}); d.Missing != 1 {
		t.Fatalf("a gap: %+v", d)
	}
	a := []eventRec{{1, "create", "1"}, {2, "update", "1"}}
	if n := disagreements(a, []eventRec{{1, "create", "1"}, {2, "update", "1"}}); n != 0 {
		t.Fatalf("two nodes agreeing: %d", n)
	}
	if n := disagreements(a, []eventRec{{1, "create", "1"}, {2, "update", "2"}}); n != 1 {
		t.Fatalf("two nodes naming another object for seq 2: %d", n)
	}
}
