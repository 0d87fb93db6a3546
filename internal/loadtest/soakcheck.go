package loadtest

// The soak's judgements, apart from the run, so that tests can show each
// catches what it is for.

// eventRec is one event as a client saw it.
type eventRec struct {
	Seq    int64
	Action string
	PK     string // canonical JSON
}

// Diff is how the events a subscriber got differ from what it should have
// got: each of its counts is zero for a correct delivery.
type Diff struct {
	Missing    int `json:"missing"`    // expected, never got
	Duplicates int `json:"duplicates"` // got more than once
	Unexpected int `json:"unexpected"` // got, never expected (another kind, another object, outside the window)
	OutOfOrder int `json:"out_of_order"`
}

// Zero reports whether d shows no difference.
func (d Diff) Zero() bool { return d == Diff{} }

// Add sums two diffs.
func (d Diff) Add(e Diff) Diff {
	return Diff{d.Missing + e.Missing, d.Duplicates + e.Duplicates, d.Unexpected + e.Unexpected, d.OutOfOrder + e.OutOfOrder}
}

// compareSeqs compares the seqs a subscriber got, in the order it got
// them, with those it should have got, ascending.
func compareSeqs(want, got []int64) Diff {
	var d Diff
	expected := make(map[int64]bool, len(want))
	for _, s := range want {
		expected[s] = true
	}
	seen := make(map[int64]bool, len(got))
	var last int64 = -1
	for _, s := range got {
		switch {
		case seen[s]:
			d.Duplicates++
			continue
		case !expected[s]:
			d.Unexpected++
		}
		seen[s] = true
		if s <= last {
			d.OutOfOrder++
		}
		last = max(last, s)
	}
	for _, s := range want {
		if !seen[s] {
			d.Missing++
		}
	}
	return d
}

// span is a range of seqs (From, To].
type span struct{ From, To int64 }

func (s span) holds(seq int64) bool { return seq > s.From && seq <= s.To }

// expectedSeqs picks from a stream's complete record the seqs a
// subscription should have got: those in its window that match, less
// those in the gaps a resync (410) left.
func expectedSeqs(record []eventRec, window span, gaps []span, match func(eventRec) bool) []int64 {
	var out []int64
next:
	for _, e := range record {
		if !window.holds(e.Seq) || !match(e) {
			continue
		}
		for _, g := range gaps {
			if g.holds(e.Seq) {
				continue next
			}
		}
		out = append(out, e.Seq)
	}
	return out
}

// seqsOf returns the seqs of record, in its order.
func seqsOf(record []eventRec) []int64 {
	out := make([]int64, len(record))
	for i, e := range record {
		out[i] = e.Seq
	}
	return out
}

// contiguous returns every seq of (w.From, w.To], ascending: what a client
// subscribed to every kind of a model's changes must see, since the seqs of
// a model have no gap.
func contiguous(w span) []int64 {
	out := make([]int64, 0, max(w.To-w.From, 0))
	for s := w.From + 1; s <= w.To; s++ {
		out = append(out, s)
	}
	return out
}

// disagreements counts the seqs two records both hold but describe
// differently (another action or object): two nodes must agree on what
// each change was.
func disagreements(a, b []eventRec) int {
	byseq := make(map[int64]eventRec, len(a))
	for _, e := range a {
		byseq[e.Seq] = e
	}
	n := 0
	for _, e := range b {
		if o, ok := byseq[e.Seq]; ok && o != e {
			n++
		}
	}
	return n
}
