// Package hub fans committed changes out to subscribed peers. It keeps an
// index from (stream, action, pk) to peers, encodes each change once per
// stream and dialect, and hands the same bytes to every subscriber without
// blocking: Peer.Send only queues.
//
// Delivery rules (docs/protocol.md):
//   - Channels API subscriptions: a peer gets one event per change however
//     many of its subscriptions match ("update any" and "update pk 7" both
//     matching an update of 7 still give one event).
//   - DCRF instance subscriptions: each (peer, request_id) gets its own event,
//     carrying that request_id, since DCRF clients match events by it.
package hub

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"

	"github.com/streamapi/streamapi"
	"github.com/streamapi/streamapi/internal/livelist"
	"github.com/streamapi/streamapi/internal/wire"
)

// Hub is the subscription index and fan-out. Its methods are safe for
// concurrent use.
type Hub struct {
	log *slog.Logger

	mu          sync.RWMutex
	streams     map[string][]string         // model label → streams bound to it
	scopes      map[string]streamapi.Scoper // stream → its resource, when it has a scope
	subs        map[subKey]map[streamapi.Peer]struct{}
	inst        map[instKey]map[instSub][]byte // value: the request_id bytes, made once
	byPeer      map[streamapi.Peer]*peerSubs
	byUser      map[string]map[streamapi.Peer]struct{} // user ID → its subscribed peers
	live        map[string]*liveStream                 // stream → its live lists
	liveByModel map[string][]*liveStream               // model label → the streams serving live lists of it
}

// subKey names a Channels API subscription; pk "" means any object.
type subKey struct {
	stream, action, pk string
}

// instKey names the DCRF subscriptions to one object.
type instKey struct {
	stream, pk string
}

type instSub struct {
	peer streamapi.Peer
	rid  string // the subscribing request's request_id, raw JSON
}

// peerSubs lists a peer's subscriptions, to drop them when it goes.
type peerSubs struct {
	user string // the peer's user ID when it subscribed
	subs map[subKey]struct{}
	inst map[instKey]map[string]struct{}
	live map[liveKey]livelist.ID
}

// New returns an empty hub.
func New(log *slog.Logger) *Hub {
	if log == nil {
		log = slog.Default()
	}
	return &Hub{
		log:         log,
		streams:     make(map[string][]string),
		scopes:      make(map[string]streamapi.Scoper),
		subs:        make(map[subKey]map[streamapi.Peer]struct{}),
		inst:        make(map[instKey]map[instSub][]byte),
		byPeer:      make(map[streamapi.Peer]*peerSubs),
		byUser:      make(map[string]map[streamapi.Peer]struct{}),
		live:        map[string]*liveStream{},
		liveByModel: map[string][]*liveStream{},
	}
}

// Bind routes the changes of model to stream's subscribers.
func (h *Hub) Bind(model, stream string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.streams[model] = append(h.streams[model], stream)
}

// BindScope makes stream's events go only to the subscribers whose user may
// see the object, as s says, with visibility changes turned into creates
// and deletes (streamapi.AsSeen).
func (h *Hub) BindScope(stream string, s streamapi.Scoper) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.scopes[stream] = s
}

// userOf returns a peer's user, when it knows one.
func userOf(p streamapi.Peer) *streamapi.User {
	if u, ok := p.(interface{ User() *streamapi.User }); ok {
		return u.User()
	}
	return nil
}

// PKKey returns the index key of a primary key: its canonical JSON.
func PKKey(pk any) string {
	if pk == nil {
		return ""
	}
	return string(streamapi.EncodePK(pk))
}

func (h *Hub) peer(p streamapi.Peer) *peerSubs {
	ps := h.byPeer[p]
	if ps == nil {
		ps = &peerSubs{}
		if u := userOf(p); u != nil && u.ID != "" {
			ps.user = u.ID
			set := h.byUser[u.ID]
			if set == nil {
				set = make(map[streamapi.Peer]struct{})
				h.byUser[u.ID] = set
			}
			set[p] = struct{}{}
		}
		h.byPeer[p] = ps
	}
	return ps
}

func (h *Hub) forget(p streamapi.Peer, ps *peerSubs) {
	delete(h.byPeer, p)
	if set := h.byUser[ps.user]; set != nil {
		delete(set, p)
		if len(set) == 0 {
			delete(h.byUser, ps.user)
		}
	}
}

// Subscribe adds p to the Channels API subscription (stream, action, pk);
// pk nil means any object. Subscribing twice is the same as once.
func (h *Hub) Subscribe(p streamapi.Peer, stream, action string, pk any) {
	k := subKey{stream, action, PKKey(pk)}
	h.mu.Lock()
	defer h.mu.Unlock()
	set := h.subs[k]
	if set == nil {
		set = make(map[streamapi.Peer]struct{})
		h.subs[k] = set
	}
	set[p] = struct{}{}
	ps := h.peer(p)
	if ps.subs == nil {
		ps.subs = make(map[subKey]struct{})
	}
	ps.subs[k] = struct{}{}
}

// Unsubscribe removes p from (stream, action, pk). It reports whether p
// was subscribed.
func (h *Hub) Unsubscribe(p streamapi.Peer, stream, action string, pk any) bool {
	k := subKey{stream, action, PKKey(pk)}
	h.mu.Lock()
	defer h.mu.Unlock()
	ps := h.byPeer[p]
	if ps == nil {
		return false
	}
	if _, ok := ps.subs[k]; !ok {
		return false
	}
	delete(ps.subs, k)
	h.dropSub(k, p)
	h.forgetIfEmpty(p, ps)
	return true
}

// SubscribeInstance adds a DCRF subscription of p to the object pk of
// stream, answered with request id rid (raw JSON, "null" when absent).
func (h *Hub) SubscribeInstance(p streamapi.Peer, stream string, pk any, rid json.RawMessage) {
	k := instKey{stream, PKKey(pk)}
	s := instSub{p, ridKey(rid)}
	h.mu.Lock()
	defer h.mu.Unlock()
	set := h.inst[k]
	if set == nil {
		set = make(map[instSub][]byte)
		h.inst[k] = set
	}
	set[s] = []byte(s.rid)
	ps := h.peer(p)
	if ps.inst == nil {
		ps.inst = make(map[instKey]map[string]struct{})
	}
	if ps.inst[k] == nil {
		ps.inst[k] = make(map[string]struct{})
	}
	ps.inst[k][s.rid] = struct{}{}
}

// UnsubscribeInstance removes p's DCRF subscriptions to the object pk of
// stream, whatever their request ids. It reports whether there were any.
func (h *Hub) UnsubscribeInstance(p streamapi.Peer, stream string, pk any) bool {
	k := instKey{stream, PKKey(pk)}
	h.mu.Lock()
	defer h.mu.Unlock()
	ps := h.byPeer[p]
	if ps == nil || len(ps.inst[k]) == 0 {
		return false
	}
	for rid := range ps.inst[k] {
		h.dropInst(k, instSub{p, rid})
	}
	delete(ps.inst, k)
	h.forgetIfEmpty(p, ps)
	return true
}

// Drop removes every subscription of p; the connection calls it on close.
func (h *Hub) Drop(p streamapi.Peer) {
	h.mu.Lock()
	ps := h.byPeer[p]
	if ps == nil {
		h.mu.Unlock()
		return
	}
	var live map[*liveStream][]livelist.ID
	for k, id := range ps.live {
		if ls := h.live[k.stream]; ls != nil {
			if live == nil {
				live = map[*liveStream][]livelist.ID{}
			}
			live[ls] = append(live[ls], id)
		}
	}
	defer h.dropLive(live) // after h.mu is released (deferred calls run last in, first out)
	defer h.mu.Unlock()
	for k := range ps.subs {
		h.dropSub(k, p)
	}
	for k, rids := range ps.inst {
		for rid := range rids {
			h.dropInst(k, instSub{p, rid})
		}
	}
	h.forget(p, ps)
}

// Subscriptions returns how many subscriptions p holds (for tests and
// metrics).
func (h *Hub) Subscriptions(p streamapi.Peer) int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.byPeer[p].count()
}

// Holds reports whether p already holds the Channels API subscription
// (stream, action, pk), or, with rid not nil, the DCRF subscription to pk
// answered with request id rid: making it again adds nothing.
func (h *Hub) Holds(p streamapi.Peer, stream, action string, pk any, rid json.RawMessage) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	ps := h.byPeer[p]
	if ps == nil {
		return false
	}
	if rid != nil {
		_, ok := ps.inst[instKey{stream, PKKey(pk)}][ridKey(rid)]
		return ok
	}
	_, ok := ps.subs[subKey{stream, action, PKKey(pk)}]
	return ok
}

// Total returns how many subscriptions all peers hold.
func (h *Hub) Total() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	n := 0
	for _, ps := range h.byPeer {
		n += ps.count()
	}
	return n
}

func (ps *peerSubs) count() int {
	if ps == nil {
		return 0
	}
	n := len(ps.subs) + len(ps.live)
	for _, rids := range ps.inst {
		n += len(rids)
	}
	return n
}

// Peers returns how many peers hold at least one subscription.
func (h *Hub) Peers() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.byPeer)
}

func (h *Hub) dropSub(k subKey, p streamapi.Peer) {
	if set := h.subs[k]; set != nil {
		delete(set, p)
		if len(set) == 0 {
			delete(h.subs, k)
		}
	}
}

func (h *Hub) dropInst(k instKey, s instSub) {
	if set := h.inst[k]; set != nil {
		delete(set, s)
		if len(set) == 0 {
			delete(h.inst, k)
		}
	}
}

func (h *Hub) forgetIfEmpty(p streamapi.Peer, ps *peerSubs) {
	if len(ps.subs) == 0 && len(ps.inst) == 0 && len(ps.live) == 0 {
		h.forget(p, ps)
	}
}

func ridKey(rid json.RawMessage) string {
	if len(rid) == 0 {
		return "null"
	}
	return string(rid)
}

// Publish fans c out to its subscribers. It is a streamapi.ChangeHandler:
// the server subscribes it to the broker once per model label.
func (h *Hub) Publish(ctx context.Context, c streamapi.Change) {
	h.publish(ctx, c)
	h.mu.RLock()
	live := h.liveByModel[c.Model]
	h.mu.RUnlock()
	for _, ls := range live {
		lc := c // (taking c's address would move every change to the heap)
		h.publishLive(ctx, ls, &lc)
	}
}

func (h *Hub) publish(ctx context.Context, c streamapi.Change) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	pk := string(c.PK)
	for _, stream := range h.streams[c.Model] {
		if s := h.scopes[stream]; s != nil {
			h.publishScoped(ctx, stream, s, c)
			continue
		}
		anyOf := h.subs[subKey{stream, c.Action, ""}]
		oneOf := h.subs[subKey{stream, c.Action, pk}]
		if len(anyOf)+len(oneOf) > 0 {
			f, err := wire.EncodeEvent(stream, &c)
			if err != nil {
				h.log.ErrorContext(ctx, "encode event", "stream", stream, "err", err)
				continue
			}
			for p := range anyOf {
				p.Send(f)
			}
			for p := range oneOf {
				if _, dup := anyOf[p]; !dup {
					p.Send(f)
				}
			}
		}
		if c.Action == streamapi.ChangeCreate {
			continue // DCRF instance subscriptions see updates and deletes
		}
		inst := h.inst[instKey{stream, pk}]
		if len(inst) == 0 {
			continue
		}
		f, err := wire.EncodeInstanceEvent(stream, &c)
		if err != nil {
			h.log.ErrorContext(ctx, "encode instance event", "stream", stream, "err", err)
			continue
		}
		for s, rid := range inst {
			g := f
			g.Mid = rid
			s.peer.Send(g)
		}
	}
}

// publishScoped fans c out on a stream whose resource has a scope: each
// subscriber gets the change as its user sees it (nothing, or a create,
// update or delete), evaluated in memory once per user. Events are still
// encoded once per kind. h.mu is held (read).
func (h *Hub) publishScoped(ctx context.Context, stream string, s streamapi.Scoper, c streamapi.Change) {
	// c by value: taking the caller's address would move every change,
	// scoped or not, to the heap.
	vis := s.Visibility(&c)
	pk := string(c.PK)
	// as returns the change as u sees it.
	as := func(u *streamapi.User) (streamapi.Change, bool) {
		b, a := vis(u)
		return streamapi.AsSeen(c, b, a)
	}
	frames := map[string]streamapi.Frame{}
	frame := func(seen *streamapi.Change) (streamapi.Frame, bool) {
		if f, ok := frames[seen.Action]; ok {
			return f, true
		}
		f, err := wire.EncodeEvent(stream, seen)
		if err != nil {
			h.log.ErrorContext(ctx, "encode event", "stream", stream, "err", err)
			return f, false
		}
		frames[seen.Action] = f
		return f, true
	}
	sent := map[streamapi.Peer]bool{}
	for _, kind := range []string{streamapi.ChangeCreate, streamapi.ChangeUpdate, streamapi.ChangeDelete} {
		for _, key := range []subKey{{stream, kind, ""}, {stream, kind, pk}} {
			for p := range h.subs[key] {
				if sent[p] {
					continue
				}
				seen, ok := as(userOf(p))
				if !ok || seen.Action != kind {
					continue
				}
				if f, ok := frame(&seen); ok {
					p.Send(f)
					sent[p] = true
				}
			}
		}
	}
	inst := h.inst[instKey{stream, pk}]
	if len(inst) == 0 {
		return
	}
	instFrames := map[string]streamapi.Frame{}
	for sub, rid := range inst {
		seen, ok := as(userOf(sub.peer))
		if !ok || seen.Action == streamapi.ChangeCreate {
			continue // DCRF instance subscriptions see updates and deletes
		}
		f, ok := instFrames[seen.Action]
		if !ok {
			var err error
			if f, err = wire.EncodeInstanceEvent(stream, &seen); err != nil {
				h.log.ErrorContext(ctx, "encode instance event", "stream", stream, "err", err)
				continue
			}
			instFrames[seen.Action] = f
		}
		g := f
		g.Mid = rid
		sub.peer.Send(g)
	}
}

// Watching reports whether a peer of user holds a subscription on stream
// (a live list included): whether a change of what user may see there has
// anyone to tell.
func (h *Hub) Watching(stream, user string) bool { return h.watching(stream, user, true) }

// Subscribed is Watching without live lists: whether user's peers hold
// event subscriptions on stream, which a view change sends bursts to.
func (h *Hub) Subscribed(stream, user string) bool { return h.watching(stream, user, false) }

func (h *Hub) watching(stream, user string, live bool) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for p := range h.byUser[user] {
		ps := h.byPeer[p]
		for k := range ps.subs {
			if k.stream == stream {
				return true
			}
		}
		for k := range ps.inst {
			if k.stream == stream {
				return true
			}
		}
		for k := range ps.live {
			if live && k.stream == stream {
				return true
			}
		}
	}
	return false
}

// BatchSender is implemented by peers that take several frames at once,
// bounded as one backlog by bytes only: a visibility burst (a board's
// thousand cards entering view) is not a slow consumer's backlog.
type BatchSender interface {
	SendBatch(fs []streamapi.Frame)
}

// Burst tells user's peers of the objects cs of stream entering or
// leaving their view: cs are the objects as they are (create changes),
// and vis(i) says whether the user could see cs[i] before and can now.
// Each peer gets, in cs's order, a create for an object entering view on
// its create subscriptions and a delete for one leaving on its delete
// subscriptions (and its DCRF subscriptions to that object), once per
// object whatever subscriptions match, as one batch. It returns how many
// frames it sent.
func (h *Hub) Burst(ctx context.Context, stream, user string, cs []streamapi.Change, vis func(i int) streamapi.Visibility) int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	peers := h.byUser[user]
	if len(peers) == 0 {
		return 0
	}
	// Each object as one user value sees it, and its frames, made once
	// for all that user's peers (tabs of one handshake share a *User).
	type seenAs struct {
		seen       streamapi.Change
		ev, inst   streamapi.Frame
		evOK, inOK bool
	}
	byUser := map[*streamapi.User][]*seenAs{}
	views := make([]streamapi.Visibility, len(cs))
	sent := 0
	for p := range peers {
		u := userOf(p)
		if u == nil || u.ID != user {
			continue
		}
		seen, ok := byUser[u]
		if !ok {
			seen = make([]*seenAs, len(cs))
			for i := range cs {
				if views[i] == nil {
					views[i] = vis(i)
				}
				b, a := views[i](u)
				c := cs[i]
				c.Action, c.Before = streamapi.ChangeUpdate, c.Data
				if sc, ok := streamapi.AsSeen(c, b, a); ok && sc.Action != streamapi.ChangeUpdate {
					seen[i] = &seenAs{seen: sc}
				}
			}
			byUser[u] = seen
		}
		ps := h.byPeer[p]
		var batch []streamapi.Frame
		for _, e := range seen {
			if e == nil {
				continue
			}
			pk := string(e.seen.PK)
			_, anyOf := ps.subs[subKey{stream, e.seen.Action, ""}]
			_, oneOf := ps.subs[subKey{stream, e.seen.Action, pk}]
			if anyOf || oneOf {
				if !e.evOK {
					f, err := wire.EncodeEvent(stream, &e.seen)
					if err != nil {
						h.log.ErrorContext(ctx, "encode event", "stream", stream, "err", err)
						continue
					}
					e.ev, e.evOK = f, true
				}
				batch = append(batch, e.ev)
			}
			if e.seen.Action != streamapi.ChangeDelete {
				continue
			}
			k := instKey{stream, pk}
			for rid := range ps.inst[k] {
				if !e.inOK {
					f, err := wire.EncodeInstanceEvent(stream, &e.seen)
					if err != nil {
						h.log.ErrorContext(ctx, "encode instance event", "stream", stream, "err", err)
						break
					}
					e.inst, e.inOK = f, true
				}
				g := e.inst
				g.Mid = h.inst[k][instSub{p, rid}]
				batch = append(batch, g)
			}
		}
		if len(batch) == 0 {
			continue
		}
		sent += len(batch)
		if bs, ok := p.(BatchSender); ok {
			bs.SendBatch(batch)
			continue
		}
		for _, f := range batch {
			p.Send(f)
		}
	}
	return sent
}

// CloseUser closes, with code and reason, every subscribed connection of
// user that can be closed (it has Close(code, reason)), without waiting.
func (h *Hub) CloseUser(user string, code uint16, reason string) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for p := range h.byUser[user] {
		if c, ok := p.(interface {
			Close(code uint16, reason string)
		}); ok {
			go c.Close(code, reason)
		}
	}
}

// UserChanged files p under its user as it is now: a connection that
// subscribed anonymously and then authenticated is reached by the bursts
// of its user.
func (h *Hub) UserChanged(p streamapi.Peer) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ps := h.byPeer[p]
	if ps == nil {
		return
	}
	u := userOf(p)
	id := ""
	if u != nil {
		id = u.ID
	}
	if id == ps.user {
		return
	}
	if set := h.byUser[ps.user]; set != nil {
		delete(set, p)
		if len(set) == 0 {
			delete(h.byUser, ps.user)
		}
	}
	ps.user = id
	if id != "" {
		set := h.byUser[id]
		if set == nil {
			set = make(map[streamapi.Peer]struct{})
			h.byUser[id] = set
		}
		set[p] = struct{}{}
	}
}
