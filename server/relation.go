package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/streamapi/streamapi"
	"github.com/streamapi/streamapi/internal/conn"
	"github.com/streamapi/streamapi/internal/hub"
)

// Relation scopes (docs/auth.md): the server keeps each relation's index
// in step with its membership model's feed, and turns a user's joining or
// leaving a group into the objects entering or leaving their view.

// relDep is a stream whose scope follows a relation.
type relDep struct {
	stream, model string
	res           streamapi.RelationScoper
}

// bindRelations finds the relations the resources' scopes follow.
func (s *Server) bindRelations(resources []streamapi.Resource, models map[string]bool) error {
	s.rels = map[string]streamapi.Relation{}
	s.relDeps = map[string][]relDep{}
	s.relSeq = map[string]*relPos{}
	for _, r := range resources {
		rs, ok := r.(streamapi.RelationScoper)
		if !ok {
			continue
		}
		for _, rel := range rs.Relations() {
			if !models[rel.Model()] {
				return fmt.Errorf("server: stream %s follows the relation of %s, which no served resource stores", r.Stream(), rel.Model())
			}
			if old := s.rels[rel.Model()]; old != nil && old != rel {
				return fmt.Errorf("server: two relations on %s", rel.Model())
			}
			s.rels[rel.Model()] = rel
			s.relDeps[rel.Model()] = append(s.relDeps[rel.Model()], relDep{stream: r.Stream(), model: r.Model(), res: rs})
		}
	}
	// A relation's membership model may follow only its own relation:
	// deliveries would otherwise wait on each other's locks.
	for model, deps := range s.relDeps {
		for _, d := range deps {
			if d.model != model && s.rels[d.model] != nil {
				return fmt.Errorf("server: stream %s is both a membership (of a relation) and follows the relation of %s", d.stream, model)
			}
		}
	}
	return nil
}

// loadRelations fills each relation's index and makes its model's feed
// start where the index was read.
func (s *Server) loadRelations(ctx context.Context) error {
	names := make([]string, 0, len(s.rels))
	for m := range s.rels {
		names = append(names, m)
	}
	sort.Strings(names)
	for _, m := range names {
		rel := s.rels[m]
		seq, err := rel.Load(ctx)
		if err != nil {
			return fmt.Errorf("server: %w", err)
		}
		s.relSeq[m] = &relPos{last: seq}
		if s.feed != nil {
			s.feed.SetStart(m, seq)
			for _, d := range s.relDeps[m] {
				pos := s.feed.Position(d.model)
				if d.model == m {
					pos = seq
				}
				rel.Noted("", d.model, pos)
			}
		}
		s.log.InfoContext(ctx, "relation index loaded", "model", m, "seq", seq)
	}
	return nil
}

// deliver is the feed's (or, without a change log, the broker's) handler:
// a membership change first updates its relation, then every change is
// fanned out.
func (s *Server) deliver(ctx context.Context, c streamapi.Change) {
	if rel := s.rels[c.Model]; rel != nil {
		st := s.relSeq[c.Model]
		switch {
		case st == nil || c.Seq == 0:
			s.applyRelation(ctx, rel, &c)
		case c.Seq <= st.last:
			// Already in the index (reloaded past it): told as is.
		default:
			if st.last > 0 && c.Seq > st.last+1 {
				st.last = s.reloadRelation(ctx, rel, st.last, c.Seq)
			}
			if c.Seq > st.last {
				s.applyRelation(ctx, rel, &c)
				st.last = c.Seq
			}
		}
	}
	s.hub.Publish(ctx, c)
}

// defaultMaxBurst is ConnLimits.MaxBurst's default.
const defaultMaxBurst = 10_000

// errBurstTooLarge: a group holds more objects than MaxBurst.
var errBurstTooLarge = errors.New("more objects than MaxBurst")

// relationReadTimeout bounds the reads a membership change makes while
// its model's delivery waits (the feed's cut has its own, the same).
const relationReadTimeout = 10 * time.Second

// relPos is where a relation's index stands in its model's seqs; only
// that model's delivery touches it.
type relPos struct{ last int64 }

// reloadRelation reads rel's index again after its model's changes from
// after to before were trimmed from the log before this node delivered
// them: the index would otherwise miss them for good. Resumes from before
// now answer 410, as after a restart.
// It returns the seq the index now stands at: changes up to it are in it
// already.
func (s *Server) reloadRelation(ctx context.Context, rel streamapi.Relation, after, before int64) int64 {
	s.log.ErrorContext(ctx, "relation: membership changes trimmed from the log before this node delivered them; reloading the index", "model", rel.Model(), "from", after+1, "to", before-1)
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), relationReadTimeout)
	defer cancel()
	seq, err := rel.Load(lctx)
	if err != nil {
		s.log.ErrorContext(ctx, "relation: reload the index", "model", rel.Model(), "err", err)
		return after
	}
	for _, d := range s.relDeps[rel.Model()] {
		pos := before
		if d.model != rel.Model() && s.cfg.ChangeLog != nil {
			if _, last, err := s.cfg.ChangeLog.Bounds(lctx, d.model); err == nil {
				pos = last
			}
		}
		rel.Noted("", d.model, pos+1)
	}
	return seq
}

// applyRelation brings rel up to c. A change that makes a user join or
// leave a group holds the delivery of every stream following rel on this
// node (a cut). Under it, it finds which of those streams the user
// watches here, reads their objects of the group and every following
// model's last seq in one snapshot, delivers those models' changes up to
// the snapshot (with the old memberships), updates the index and sends the
// objects entering or leaving view. Each change is then told to the user
// once, before the cut as they saw it then, after it as they see it now.
// A subscription being registered is wholly before the cut (and watched)
// or after it (and under the new memberships). The membership stream's own
// rows come from the index, as of c.
func (s *Server) applyRelation(ctx context.Context, rel streamapi.Relation, c *streamapi.Change) {
	ts := rel.Peek(c)
	if len(ts) == 0 {
		rel.Apply(c)
		return
	}
	type job struct {
		dep      relDep
		t        streamapi.Transition
		plain    bool // the user has event subscriptions on the stream: a burst
		cs       []streamapi.Change
		lives    []*hub.LiveSub // the user's live lists on the stream: reloaded
		installs []func() streamapi.LiveUpdate
	}
	deps := s.relDeps[rel.Model()]
	var cut []string
	for _, d := range deps {
		if d.model != rel.Model() && !slices.Contains(cut, d.model) {
			cut = append(cut, d.model)
		}
	}
	var jobs []*job
	seqs := map[string]int64{}
	max := s.cfg.Conn.MaxBurst
	if max == 0 {
		max = defaultMaxBurst
	}
	read := func(ctx context.Context) (map[string]int64, error) {
		jobs = jobs[:0]
		for _, t := range ts {
			for _, d := range deps {
				j := &job{dep: d, t: t, plain: s.hub.Subscribed(d.stream, t.User)}
				if d.model != rel.Model() {
					// (A live list of the membership stream itself follows
					// the membership changes as events: docs/design.md.)
					j.lives = s.hub.LiveOf(t.User, d.stream)
				}
				if j.plain || len(j.lives) > 0 {
					jobs = append(jobs, j)
				}
			}
		}
		fn := func(ctx context.Context) error {
			if s.cfg.ChangeLog != nil {
				for _, m := range cut {
					_, last, err := s.cfg.ChangeLog.Bounds(ctx, m)
					if err != nil {
						return err
					}
					seqs[m] = last
				}
			}
			for _, j := range jobs {
				if j.dep.model == rel.Model() {
					continue
				}
				j.installs = j.installs[:0]
				for _, l := range j.lives {
					_, install, err := l.List().Read(ctx)
					if err != nil {
						return err
					}
					j.installs = append(j.installs, install)
				}
				if !j.plain {
					continue
				}
				_, cs, err := j.dep.res.Group(ctx, rel, j.t.Group, max)
				if err != nil {
					return err
				}
				if max >= 0 && len(cs) > max {
					return fmt.Errorf("stream %s: group %s: %w (%d)", j.dep.stream, j.t.Group, errBurstTooLarge, max)
				}
				j.cs = cs
			}
			return nil
		}
		// One snapshot for every read: one seq per model.
		if rt, ok := s.cfg.ChangeLog.(streamapi.ReadTxer); ok {
			return seqs, rt.ReadTx(ctx, fn)
		}
		return seqs, fn(ctx)
	}
	// apply brings the index up to c and notes where each following model
	// stood for the users; with err nil it sends the bursts, otherwise
	// it closes the users' connections here (their resumes from before
	// answer 410). It runs under the cut, so a subscription registering
	// meanwhile is wholly before it (and closed, or told) or after it.
	apply := func(delivered map[string]int64, err error) {
		rel.Apply(c)
		for _, t := range ts {
			for _, d := range deps {
				pos, ok := delivered[d.model]
				if at, seen := seqs[d.model]; seen && (!ok || at > pos) {
					pos, ok = at, true
				}
				if d.model == rel.Model() {
					pos, ok = c.Seq, true
				}
				if ok {
					rel.Noted(t.User, d.model, pos)
				}
			}
		}
		if err != nil {
			code, reason := uint16(conn.CloseInternalError), "membership changed: resubscribe"
			if errors.Is(err, errBurstTooLarge) {
				code, reason = conn.ClosePolicy, "view change too large: reconnect and list"
			}
			s.log.ErrorContext(ctx, "relation: the objects entering or leaving view cannot be sent; closing the users' connections on this node", "model", rel.Model(), "seq", c.Seq, "err", err)
			for _, t := range ts {
				s.hub.CloseUser(t.User, code, reason)
			}
			return
		}
		for _, j := range jobs {
			for i, l := range j.lives {
				// The user's live lists on the stream, read again in the
				// cut's snapshot: the events from what each client holds.
				s.hub.InstallLive(ctx, l, seqs[j.dep.model], j.installs[i])
			}
			if !j.plain {
				continue
			}
			cs := j.cs
			if j.dep.model == rel.Model() {
				// The other rows of the group; c's own is told live.
				for _, r := range rel.Rows(j.t.Group, c.Seq) {
					if string(r.PK) != string(c.PK) {
						cs = append(cs, r)
					}
				}
				if max >= 0 && len(cs) > max {
					s.log.WarnContext(ctx, "relation: a group's members are too many to send; closing the user's connections on this node", "stream", j.dep.stream, "user", j.t.User, "group", j.t.Group, "members", len(cs), "max_burst", max)
					s.hub.CloseUser(j.t.User, conn.ClosePolicy, "view change too large: reconnect and list")
					continue
				}
			}
			if len(cs) == 0 {
				continue
			}
			ts := []streamapi.Transition{j.t}
			n := s.hub.Burst(ctx, j.dep.stream, j.t.User, cs, func(i int) streamapi.Visibility {
				// The object as it is, before and after the transition.
				c := cs[i]
				c.Action, c.Before = streamapi.ChangeUpdate, c.Data
				return j.dep.res.VisibilityAcross(&c, rel, ts)
			})
			s.log.DebugContext(ctx, "relation: view changed", "stream", j.dep.stream, "user", j.t.User, "group", j.t.Group, "joined", j.t.Joined, "objects", len(cs), "events", n)
		}
	}
	if s.feed != nil {
		_ = s.feed.Cut(ctx, cut, read, apply)
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), relationReadTimeout)
	_, err := read(rctx)
	cancel()
	apply(seqs, err)
}
