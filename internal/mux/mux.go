// Package mux is the demultiplexer: it decodes each frame, routes it by
// stream to its resource, handles the subscription actions against the hub,
// and encodes the reply. It implements conn.Handler.
package mux

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"time"

	"github.com/streamapi/streamapi"
	"github.com/streamapi/streamapi/internal/conn"
	"github.com/streamapi/streamapi/internal/feed"
	"github.com/streamapi/streamapi/internal/hub"
	"github.com/streamapi/streamapi/internal/wire"
)

// Mux routes frames to resources.
type Mux struct {
	resources map[string]streamapi.Resource
	hub       *hub.Hub
	feed      *feed.Feed // nil without a change log: no seq, no resume
	verifier  streamapi.TokenVerifier
	log       *slog.Logger
	limits    Limits
}

// Limits bound what one connection may ask of the mux.
type Limits struct {
	// MaxSubscriptions caps the subscriptions one connection holds (both
	// dialects together); one more is refused with 429, naming the
	// limit, and the connection lives. Default 1000; negative: none.
	MaxSubscriptions int
	// MaxRequestIDBytes caps a request_id's length in bytes (its JSON);
	// a longer one is refused with 400 and a null request_id, as the
	// subscription's id is kept and echoed in every event. Default 256;
	// negative: none.
	MaxRequestIDBytes int
}

// SetLimits sets the per-connection limits; zero fields take the
// defaults.
func (m *Mux) SetLimits(l Limits) {
	if l.MaxSubscriptions == 0 {
		l.MaxSubscriptions = 1000
	}
	if l.MaxRequestIDBytes == 0 {
		l.MaxRequestIDBytes = 256
	}
	m.limits = l
}

var _ conn.Handler = (*Mux)(nil)

// New returns a Mux over resources (keyed by stream) and h. f, when not
// nil, is the feed of the resources' models: subscriptions then start at a
// known seq and may resume after one ("since").
func New(resources map[string]streamapi.Resource, h *hub.Hub, f *feed.Feed, log *slog.Logger) *Mux {
	if log == nil {
		log = slog.Default()
	}
	m := &Mux{resources: resources, hub: h, feed: f, log: log}
	m.SetLimits(Limits{})
	return m
}

// SetVerifier lets clients renew their credentials in-band with the
// "authenticate" action (the server's authenticator, when it takes
// tokens).
func (m *Mux) SetVerifier(v streamapi.TokenVerifier) { m.verifier = v }

// Peer is what the mux needs of a connection: a peer that knows its user
// and can have it renewed.
type Peer interface {
	streamapi.Peer
	User() *streamapi.User
	SetUser(u *streamapi.User)
}

// HandleFrame implements conn.Handler.
func (m *Mux) HandleFrame(ctx context.Context, c *conn.Conn, frame []byte) {
	m.Handle(ctx, c, frame)
}

// Handle answers one frame from p. Exactly one reply is sent per frame.
// Subscriptions take effect after their reply is queued, so no event
// overtakes the reply that acknowledges its subscription.
func (m *Mux) Handle(ctx context.Context, p Peer, frame []byte) {
	req, err := wire.DecodeRequest(frame)
	after := nothing
	subscription := false
	var rep streamapi.Reply
	switch {
	case err != nil:
		rep = streamapi.Reply{Err: err}
	case m.limits.MaxRequestIDBytes > 0 && len(req.RequestID) > m.limits.MaxRequestIDBytes:
		req.RequestID = nil // not echoed
		rep = invalidField("request_id", "Ensure this field has no more than "+strconv.Itoa(m.limits.MaxRequestIDBytes)+" bytes.")
	case req.Action == ActionAuthenticate:
		rep = m.authenticate(p, &req)
	case m.resources[req.Stream] == nil:
		rep = streamapi.Reply{Err: streamapi.Errorf(streamapi.ENOTFOUND, "Unknown stream %q.", req.Stream)}
	default:
		req.User = p.User()
		res := m.resources[req.Stream]
		switch req.Action {
		case streamapi.ActionSubscribe, streamapi.ActionUnsubscribe:
			rep, after = m.subscribe(ctx, p, res, &req)
			subscription = true
		case streamapi.ActionSubscribeInstance, streamapi.ActionUnsubscribeInstance:
			rep, after = m.subscribeInstance(ctx, p, res, &req)
			subscription = true
		default:
			rep = res.Serve(ctx, &req)
		}
	}
	rep.Err = streamapi.Timeout(rep.Err)
	if rep.Err != nil && streamapi.ErrorCode(rep.Err) == streamapi.EINTERNAL && ctx.Err() == nil {
		// (A frame whose connection closed meanwhile fails with its
		// cancelled context: nobody is there to read the reply.)
		m.log.ErrorContext(ctx, "request failed", "stream", req.Stream, "action", req.Action, "err", rep.Err)
	}
	b, err := wire.EncodeReply(&req, rep)
	if err != nil {
		m.log.ErrorContext(ctx, "encode reply", "stream", req.Stream, "action", req.Action, "err", err)
		after(false) // always called: a resume holds its model's lock until then
		return
	}
	if r, ok := p.(replier); ok && !subscription {
		r.Reply(streamapi.Frame{Head: b})
	} else {
		// A subscription's after runs once the reply is queued; a resume
		// holds its model's lock until then, so the reply must not wait
		// for the socket.
		p.Send(streamapi.Frame{Head: b})
	}
	after(true)
}

// replier is a peer that can write a reply from the calling goroutine (a
// connection's reader): conn.Conn.
type replier interface {
	Reply(f streamapi.Frame)
}

// then is what a subscription action does once its reply is queued (sent)
// or could not be (a subscription then takes no effect).
type then func(sent bool)

// ActionAuthenticate renews a connection's credentials in-band, on any
// stream: data {"token": "..."}. docs/auth.md.
const ActionAuthenticate = "authenticate"

// authenticate verifies a fresh token with the server's authenticator and
// makes its user the connection's. A refused token leaves the connection's
// user as it was.
func (m *Mux) authenticate(p Peer, req *streamapi.Request) streamapi.Reply {
	if m.verifier == nil {
		return streamapi.Reply{Err: streamapi.Errorf(streamapi.EUNKNOWNACTION, "This server does not take tokens.")}
	}
	var data struct {
		Token string `json:"token"`
	}
	if len(req.Data) > 0 {
		_ = json.Unmarshal(req.Data, &data)
	}
	if data.Token == "" {
		return invalidField("token", "This field is required.")
	}
	u, err := m.verifier.Verify(data.Token)
	if err != nil {
		return streamapi.Reply{Err: err}
	}
	if !u.Authenticated() {
		return streamapi.Reply{Err: &streamapi.Error{Code: streamapi.EUNAUTHORIZED, Message: "Invalid token."}}
	}
	if old := p.User(); old.Authenticated() && old.ID != u.ID {
		// A connection's identity does not change: its subscriptions were
		// granted to the first user.
		return streamapi.Reply{Err: streamapi.Errorf(streamapi.EFORBIDDEN, "The token is for another user.")}
	}
	p.SetUser(u)
	m.hub.UserChanged(p)
	out := map[string]any{"user": u.ID}
	if !u.Expires.IsZero() {
		out["expires"] = u.Expires.UTC().Format(time.RFC3339)
	}
	return streamapi.Reply{Status: 200, Data: out}
}

// Closed implements conn.Handler: a closed connection's subscriptions go.
func (m *Mux) Closed(c *conn.Conn) { m.hub.Drop(c) }

var nothing then = func(bool) {}

// subscribe handles the Channels API subscribe and unsubscribe actions:
// data {"action": "create"|"update"|"delete", "pk": optional}, the pk also
// accepted as payload.pk.
func (m *Mux) subscribe(ctx context.Context, p Peer, res streamapi.Resource, req *streamapi.Request) (streamapi.Reply, then) {
	var data struct {
		Action *string         `json:"action"`
		PK     json.RawMessage `json:"pk"`
		Since  json.RawMessage `json:"since"`
		Query  json.RawMessage `json:"query"`
	}
	if len(req.Data) > 0 {
		if err := json.Unmarshal(req.Data, &data); err != nil {
			return invalidField("data", "Expected a dictionary with a string \"action\"."), nothing
		}
	}
	if data.Action == nil || *data.Action == "" {
		return streamapi.Reply{Err: &streamapi.Error{Code: streamapi.EINVALID, Message: "action required"}}, nothing
	}
	kind := *data.Action
	if kind == LiveAction {
		return m.liveList(ctx, p, res, req, data.Query, false)
	}
	switch kind {
	case streamapi.ChangeCreate, streamapi.ChangeUpdate, streamapi.ChangeDelete:
	default:
		return invalidField("action", "\""+kind+"\" is not a valid choice."), nothing
	}
	rawPK := req.PK
	if rawPK == nil && len(data.PK) > 0 && string(data.PK) != "null" {
		rawPK = data.PK
	}
	var pk any
	if rawPK != nil {
		var err error
		if pk, err = res.ParsePK(rawPK); err != nil {
			return streamapi.Reply{Err: err}, nothing
		}
		if kind == streamapi.ChangeCreate {
			return invalidField("pk", "A create subscription cannot name a pk."), nothing
		}
	}
	since, bad := parseSince(data.Since)
	if bad != nil && req.Action == streamapi.ActionSubscribe {
		return streamapi.Reply{Err: bad}, nothing
	}
	if err := res.Authorize(ctx, req.User, req.Action, pk); err != nil {
		return streamapi.Reply{Err: err}, nothing
	}
	out := map[string]any{"action": kind}
	if pk != nil {
		out["pk"] = pk
	}
	if req.Action == streamapi.ActionUnsubscribe {
		m.hub.Unsubscribe(p, req.Stream, kind, pk)
		return streamapi.Reply{Status: 200, Data: out}, nothing
	}
	if err := m.roomFor(p, req.Stream, kind, pk, nil); err != nil {
		return streamapi.Reply{Err: err}, nothing
	}
	register := func() { m.hub.Subscribe(p, req.Stream, kind, pk) }
	if m.feed == nil {
		if since >= 0 {
			return streamapi.Reply{Err: streamapi.ErrResyncRequired}, nothing
		}
		return streamapi.Reply{Status: 200, Data: out}, func(sent bool) {
			if sent {
				register()
			}
		}
	}
	pkKey := hub.PKKey(pk)
	seen := asSeenBy(res, req.User)
	r, err := m.resume(ctx, res, req.User, since, pk, func(c *streamapi.Change) bool {
		if !seen(c) {
			return false
		}
		return c.Action == kind && (pk == nil || string(c.PK) == pkKey)
	})
	if err != nil {
		return streamapi.Reply{Err: err}, nothing
	}
	out["seq"] = r.Seq
	return streamapi.Reply{Status: 200, Data: out}, func(sent bool) {
		if !sent {
			r.Done(nil)
			return
		}
		r.Done(func() {
			for i := range r.Changes {
				f, err := wire.EncodeEvent(req.Stream, &r.Changes[i])
				if err != nil {
					m.log.ErrorContext(ctx, "encode event", "stream", req.Stream, "err", err)
					continue
				}
				p.Send(f)
			}
			register()
		})
	}
}

// resume opens a resume of res's model after since (since < 0: from now).
// On success the model's live delivery waits until the Resume's Done.
func (m *Mux) resume(ctx context.Context, res streamapi.Resource, u *streamapi.User, since int64, pk any, match func(*streamapi.Change) bool) (*feed.Resume, error) {
	var key json.RawMessage
	if pk != nil {
		key = json.RawMessage(hub.PKKey(pk))
	}
	r, err := m.feed.Resume(ctx, res.Model(), since, key, match)
	if errors.Is(err, feed.ErrResync) {
		return nil, streamapi.ErrResyncRequired
	}
	if err != nil {
		return nil, err
	}
	// A replay cannot tell what entered or left the user's view when a
	// membership of theirs changed since: that asks for a resync.
	if rs, ok := res.(streamapi.RelationScoper); ok && since >= 0 && u != nil {
		for _, rel := range rs.Relations() {
			if rel.ChangedAfter(u.ID, res.Model(), since) {
				r.Done(nil)
				return nil, streamapi.ErrResyncRequired
			}
		}
	}
	return r, nil
}

// asSeenBy returns a function that rewrites a replayed change as u sees it
// (streamapi.AsSeen) and reports whether u sees it at all: the live
// fan-out's rule, for resumes.
func asSeenBy(res streamapi.Resource, u *streamapi.User) func(*streamapi.Change) bool {
	sc, ok := res.(streamapi.Scoper)
	if !ok || !sc.Scoped() {
		return func(*streamapi.Change) bool { return true }
	}
	return func(c *streamapi.Change) bool {
		b, a := sc.Visibility(c)(u)
		seen, ok := streamapi.AsSeen(*c, b, a)
		*c = seen
		return ok
	}
}

// parseSince reads the optional "since" of a subscription: a seq (an
// integer, 0 or more), or -1 when absent or null.
func parseSince(raw json.RawMessage) (int64, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return -1, nil
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil || n < 0 {
		return -1, invalidField("since", "A valid integer is required.").Err
	}
	return n, nil
}

// subscribeInstance handles the DCRF dialect: subscribe_instance answers
// 201 (as DCRF does) after checking the object exists (404 otherwise);
// unsubscribe_instance answers 204. Both carry data null.
func (m *Mux) subscribeInstance(ctx context.Context, p Peer, res streamapi.Resource, req *streamapi.Request) (streamapi.Reply, then) {
	var live struct {
		Action string          `json:"action"`
		Query  json.RawMessage `json:"query"`
	}
	if len(req.Data) > 0 && req.Data[0] == '{' && json.Unmarshal(req.Data, &live) == nil && live.Action == LiveAction {
		return m.liveList(ctx, p, res, req, live.Query, true)
	}
	if req.PK == nil {
		return streamapi.Reply{Err: streamapi.ErrNotFound}, nothing
	}
	pk, err := res.ParsePK(req.PK)
	if err != nil {
		return streamapi.Reply{Err: err}, nothing
	}
	if err := res.Authorize(ctx, req.User, req.Action, pk); err != nil {
		return streamapi.Reply{Err: err}, nothing
	}
	if req.Action == streamapi.ActionUnsubscribeInstance {
		m.hub.UnsubscribeInstance(p, req.Stream, pk)
		return streamapi.Reply{Status: 204}, nothing
	}
	var data struct {
		Since json.RawMessage `json:"since"`
	}
	if len(req.Data) > 0 && string(req.Data) != "null" {
		if err := json.Unmarshal(req.Data, &data); err != nil {
			return invalidField("data", "Expected a dictionary."), nothing
		}
	}
	since, bad := parseSince(data.Since)
	if bad != nil {
		return streamapi.Reply{Err: bad}, nothing
	}
	if err := m.roomFor(p, req.Stream, "", pk, ridOrNull(req.RequestID)); err != nil {
		return streamapi.Reply{Err: err}, nothing
	}
	ok, err := res.Exists(ctx, pk)
	switch {
	case err != nil:
		return streamapi.Reply{Err: err}, nothing
	case !ok && since < 0:
		// A resumed subscription may name an object deleted while the
		// client was away: the replay ends with its delete.
		return streamapi.Reply{Err: streamapi.ErrNotFound}, nothing
	}
	rid := req.RequestID
	register := func() { m.hub.SubscribeInstance(p, req.Stream, pk, rid) }
	if m.feed == nil {
		if since >= 0 {
			return streamapi.Reply{Err: streamapi.ErrResyncRequired}, nothing
		}
		return streamapi.Reply{Status: 201}, func(sent bool) {
			if sent {
				register()
			}
		}
	}
	pkKey := hub.PKKey(pk)
	seen := asSeenBy(res, req.User)
	r, err := m.resume(ctx, res, req.User, since, pk, func(c *streamapi.Change) bool {
		if string(c.PK) != pkKey || !seen(c) {
			return false
		}
		return c.Action != streamapi.ChangeCreate
	})
	if err != nil {
		return streamapi.Reply{Err: err}, nothing
	}
	return streamapi.Reply{Status: 201, Seq: r.Seq}, func(sent bool) {
		if !sent {
			r.Done(nil)
			return
		}
		r.Done(func() {
			ridb := []byte(rid)
			if len(ridb) == 0 {
				ridb = []byte("null")
			}
			for i := range r.Changes {
				f, err := wire.EncodeInstanceEvent(req.Stream, &r.Changes[i])
				if err != nil {
					m.log.ErrorContext(ctx, "encode instance event", "stream", req.Stream, "err", err)
					continue
				}
				f.Mid = ridb
				p.Send(f)
			}
			register()
		})
	}
}

// roomFor refuses a new subscription of p past MaxSubscriptions; one it
// already holds is made again at no cost.
func (m *Mux) roomFor(p Peer, stream, action string, pk any, rid json.RawMessage) error {
	max := m.limits.MaxSubscriptions
	if max < 0 || m.hub.Subscriptions(p) < max || m.hub.Holds(p, stream, action, pk, rid) {
		return nil
	}
	return streamapi.Errorf(streamapi.ETOOMANY, "Too many subscriptions: at most %d per connection.", max)
}

func ridOrNull(rid json.RawMessage) json.RawMessage {
	if len(rid) == 0 {
		return json.RawMessage("null")
	}
	return rid
}

func invalidField(name, msg string) streamapi.Reply {
	errs := streamapi.FieldErrors{}
	errs.Add(name, msg)
	return streamapi.Reply{Err: errs.Err()}
}

// LiveAction is the data.action of a live list's subscription
// (docs/protocol.md §6.2).
const LiveAction = "list"

// liveReply is a live list's subscribe reply data.
type liveReply struct {
	Action  string          `json:"action"`
	Seq     *int64          `json:"seq,omitempty"`
	Count   *int            `json:"count,omitempty"`
	Results json.RawMessage `json:"results,omitempty"`
}

// liveList handles the subscription actions with data {"action":
// "list", "query": {...}}: subscribe (Channels API, 200) or
// subscribe_instance (DCRF, 201) reads the list's window and count in
// one snapshot, joined to the feed at its seq (the changes up to it are
// delivered first, those after it reach the list live), answers with
// them, and registers the list once the reply is queued; unsubscribe
// (200) and unsubscribe_instance (204) remove the list answered with the
// same request_id, before the reply.
func (m *Mux) liveList(ctx context.Context, p Peer, res streamapi.Resource, req *streamapi.Request, query json.RawMessage, dcrf bool) (streamapi.Reply, then) {
	lister, ok := res.(streamapi.LiveLister)
	if !ok {
		return invalidField("action", "\"list\" is not a valid choice."), nothing
	}
	if err := res.Authorize(ctx, req.User, req.Action, nil); err != nil {
		return streamapi.Reply{Err: err}, nothing
	}
	rid := ridOrNull(req.RequestID)
	if req.Action == streamapi.ActionUnsubscribe || req.Action == streamapi.ActionUnsubscribeInstance {
		m.hub.UnsubscribeLive(p, req.Stream, rid)
		if dcrf {
			return streamapi.Reply{Status: 204}, nothing
		}
		return streamapi.Reply{Status: 200, Data: liveReply{Action: LiveAction}}, nothing
	}
	if max := m.limits.MaxSubscriptions; max >= 0 && m.hub.Subscriptions(p) >= max && !m.hub.HoldsLive(p, req.Stream, rid) {
		return streamapi.Reply{Err: streamapi.Errorf(streamapi.ETOOMANY, "Too many subscriptions: at most %d per connection.", max)}, nothing
	}
	list, err := lister.LiveList(ctx, req.User, query)
	if err != nil {
		return streamapi.Reply{Err: err}, nothing
	}
	status := 200
	if dcrf {
		status = 201
	}
	answer := func(seq *int64) (streamapi.Reply, error) {
		results, err := list.Results()
		if err != nil {
			return streamapi.Reply{}, err
		}
		data := liveReply{Action: LiveAction, Seq: seq, Results: results}
		if n, asked := list.Count(); asked {
			data.Count = &n
		}
		rep := streamapi.Reply{Status: status, Data: data}
		if dcrf && seq != nil {
			rep.Seq = *seq
		}
		return rep, nil
	}
	register := func() { m.hub.SubscribeLive(p, req.Stream, rid, dcrf, list) }
	if m.feed == nil {
		// Without a change log nothing joins a snapshot to the events
		// that follow it: the window and count would drift for good.
		return streamapi.Reply{Err: streamapi.Errorf(streamapi.EUNKNOWNACTION, "Live lists need the change log, which this server does not keep.")}, nothing
	}
	var install func() streamapi.LiveUpdate
	r, err := m.feed.Snapshot(ctx, res.Model(), func(ctx context.Context) (int64, error) {
		seq, in, err := list.Read(ctx)
		install = in
		return seq, err
	})
	if err != nil {
		return streamapi.Reply{Err: err}, nothing
	}
	install()
	seq := r.Seq
	rep, err := answer(&seq)
	if err != nil {
		r.Done(nil)
		return streamapi.Reply{Err: err}, nothing
	}
	return rep, func(sent bool) {
		if !sent {
			r.Done(nil)
			return
		}
		r.Done(register)
	}
}
