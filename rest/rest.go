// Package rest serves resources over plain HTTP the way Django REST
// Framework's routers and viewsets do, with the same resources, validation,
// permissions, custom actions and events as the WebSocket:
//
//	GET    /{stream}/                 list (?page=N&page_size=M)  200 {"count", "next", "previous", "results"}
//	POST   /{stream}/                 create                      201 object
//	GET    /{stream}/{pk}/            retrieve                    200 object
//	PUT    /{stream}/{pk}/            update                      200 object
//	PATCH  /{stream}/{pk}/            patch                       200 object
//	DELETE /{stream}/{pk}/            delete                      204
//	POST   /{stream}/{pk}/{action}/   custom detail action        its status
//	POST   /{stream}/{action}/        custom list action          its status
//	GET    /                          the API root: stream → URL
//
// Custom actions declared Safe answer GET too. Every path works with or
// without the trailing slash. Errors have DRF's shapes: {"detail": "..."}
// or, for validation, the field map {"field": ["message"]}. docs/rest.md
// lists every route, status and body.
package rest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/streamapi/streamapi"
)

// Config configures a Handler.
type Config struct {
	// Resources are served under their stream names. The server has
	// applied its defaults to them (Resource.Init).
	Resources []streamapi.Resource
	// Authenticator finds each request's user; nil treats everyone as
	// anonymous. Its error answers 401.
	Authenticator streamapi.Authenticator
	// MaxBodyBytes caps request bodies; bigger ones answer 413. Default
	// 1 MiB.
	MaxBodyBytes int64
	// RequestTimeout bounds each request's handling (its context's
	// deadline); past it the request answers 503. Zero means 10 s,
	// negative none.
	RequestTimeout time.Duration
	// Logger receives internal errors; nil uses slog.Default().
	Logger *slog.Logger
}

// Handler is the REST surface. Mount it with http.StripPrefix so that it
// sees paths starting at the stream: server.Handler mounts it at /api/.
type Handler struct {
	cfg       Config
	resources map[string]streamapi.Resource
	custom    map[string]map[string]streamapi.ActionInfo // stream → wire name → action
	streams   []string
	log       *slog.Logger
}

// New returns a Handler for cfg.
func New(cfg Config) (*Handler, error) {
	if cfg.Authenticator == nil {
		cfg.Authenticator = streamapi.Anonymous
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 10 * time.Second
	}
	h := &Handler{cfg: cfg, resources: map[string]streamapi.Resource{}, custom: map[string]map[string]streamapi.ActionInfo{}, log: cfg.Logger}
	if h.log == nil {
		h.log = slog.Default()
	}
	for _, r := range cfg.Resources {
		if h.resources[r.Stream()] != nil {
			return nil, fmt.Errorf("rest: stream %q declared twice", r.Stream())
		}
		h.resources[r.Stream()] = r
		h.streams = append(h.streams, r.Stream())
		acts := map[string]streamapi.ActionInfo{}
		for _, a := range r.CustomActions() {
			acts[a.Name] = a
		}
		h.custom[r.Stream()] = acts
	}
	sort.Strings(h.streams)
	return h, nil
}

// route is what a request asks for.
type route struct {
	res    streamapi.Resource
	pk     string // "" on the collection
	custom *streamapi.ActionInfo
}

// ServeHTTP answers one request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Split the escaped path, then unescape each segment: a pk may hold
	// an escaped slash, which must not start a new segment.
	segs := strings.Split(strings.Trim(r.URL.EscapedPath(), "/"), "/")
	for i, seg := range segs {
		u, err := url.PathUnescape(seg)
		if err != nil {
			h.error(w, r, streamapi.ErrNotFound, nil)
			return
		}
		segs[i] = u
	}
	if len(segs) == 1 && segs[0] == "" {
		h.root(w, r)
		return
	}
	res := h.resources[segs[0]]
	if res == nil || len(segs) > 3 {
		h.error(w, r, streamapi.ErrNotFound, nil)
		return
	}
	rt := route{res: res}
	switch len(segs) {
	case 2:
		if a, ok := h.custom[segs[0]][segs[1]]; ok && !a.Detail {
			rt.custom = &a
		} else {
			rt.pk = segs[1]
		}
	case 3:
		a, ok := h.custom[segs[0]][segs[2]]
		if !ok || !a.Detail {
			h.error(w, r, streamapi.ErrNotFound, nil)
			return
		}
		rt.pk, rt.custom = segs[1], &a
	}
	if rt.pk == "" && len(segs) > 1 && rt.custom == nil {
		h.error(w, r, streamapi.ErrNotFound, nil)
		return
	}
	methods := h.methods(rt)
	if r.Method == http.MethodOptions {
		w.Header().Set("Allow", strings.Join(methods, ", "))
		writeJSON(w, http.StatusOK, map[string]any{"name": res.Stream(), "renders": []string{"application/json"}, "parses": []string{"application/json"}})
		return
	}
	action := h.action(rt, r.Method)
	if action == "" {
		h.notAllowed(w, r, methods)
		return
	}
	user, err := h.cfg.Authenticator.Authenticate(r)
	if err != nil {
		if streamapi.ErrorCode(err) != streamapi.EUNAUTHORIZED {
			err = fmt.Errorf("authenticate: %w", err) // logged, 500
		}
		h.error(w, r, err, nil) // 401 with the authenticator's reason ("Invalid token.")
		return
	}
	// Resources find the user in the context too (Defaults, Validate), as
	// on the WebSocket. The request has its deadline; a client that goes
	// away cancels it as well (net/http).
	ctx := streamapi.WithUser(r.Context(), user)
	if d := h.cfg.RequestTimeout; d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	r = r.WithContext(ctx)
	req := &streamapi.Request{Stream: res.Stream(), Action: action, User: user}
	if rt.pk != "" {
		req.PK, _ = json.Marshal(rt.pk)
	}
	if action == streamapi.ActionList {
		h.list(w, r, res, req, methods)
		return
	}
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		if rt.custom != nil {
			req.Data = queryData(r.URL.Query())
		}
	} else if r.Method != http.MethodDelete {
		data, err := h.body(w, r)
		if err != nil {
			h.error(w, r, err, nil)
			return
		}
		req.Data = data
	}
	rep := res.Serve(r.Context(), req)
	if rep.Err != nil {
		h.error(w, r, rep.Err, methods)
		return
	}
	if action == streamapi.ActionDelete {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	status := rep.Status
	if status == 0 {
		status = http.StatusOK
	}
	writeJSON(w, status, rep.Data)
}

// methods returns the methods the route answers, given what the resource
// offers, for Allow headers.
func (h *Handler) methods(rt route) []string {
	var out []string
	add := func(method, action string) {
		if rt.res.Offers(action) {
			out = append(out, method)
			if method == http.MethodGet {
				out = append(out, http.MethodHead)
			}
		}
	}
	switch {
	case rt.custom != nil:
		if rt.custom.Safe {
			out = append(out, http.MethodGet, http.MethodHead)
		}
		out = append(out, http.MethodPost)
	case rt.pk == "":
		add(http.MethodGet, streamapi.ActionList)
		add(http.MethodPost, streamapi.ActionCreate)
	default:
		add(http.MethodGet, streamapi.ActionRetrieve)
		add(http.MethodPut, streamapi.ActionUpdate)
		add(http.MethodPatch, streamapi.ActionPatch)
		add(http.MethodDelete, streamapi.ActionDelete)
	}
	return append(out, http.MethodOptions)
}

// action maps a method on a route to the action it performs, or "" when
// the route has no such method.
func (h *Handler) action(rt route, method string) string {
	if method == http.MethodHead {
		method = http.MethodGet
	}
	if rt.custom != nil {
		if method == http.MethodPost || method == http.MethodGet && rt.custom.Safe {
			return rt.custom.Name
		}
		return ""
	}
	if rt.pk == "" {
		switch method {
		case http.MethodGet:
			return streamapi.ActionList
		case http.MethodPost:
			return streamapi.ActionCreate
		}
		return ""
	}
	switch method {
	case http.MethodGet:
		return streamapi.ActionRetrieve
	case http.MethodPut:
		return streamapi.ActionUpdate
	case http.MethodPatch:
		return streamapi.ActionPatch
	case http.MethodDelete:
		return streamapi.ActionDelete
	}
	return ""
}

// list answers GET on a collection: DRF's PageNumberPagination body, or
// its CursorPagination body when the request has a cursor parameter.
func (h *Handler) list(w http.ResponseWriter, r *http.Request, res streamapi.Resource, req *streamapi.Request, methods []string) {
	p, err := res.ListPage(r.Context(), req, r.URL.Query())
	if err != nil {
		h.error(w, r, err, methods)
		return
	}
	if p.Cursor {
		body := cursorBody{Results: p.Results}
		if p.NextCursor != "" {
			body.Next = linkWith(r, "cursor", p.NextCursor)
		}
		writeJSON(w, http.StatusOK, body)
		return
	}
	body := listBody{Count: p.Count, Results: p.Results}
	if p.HasNext {
		body.Next = pageURL(r, p.Number+1)
	}
	if p.Number > 1 {
		body.Previous = pageURL(r, p.Number-1)
	}
	writeJSON(w, http.StatusOK, body)
}

type cursorBody struct {
	Next     *string `json:"next"`
	Previous *string `json:"previous"`
	Results  any     `json:"results"`
}

type listBody struct {
	Count    int     `json:"count"`
	Next     *string `json:"next"`
	Previous *string `json:"previous"`
	Results  any     `json:"results"`
}

// pageURL returns the absolute URL of another page of the same list, as
// DRF's build_absolute_uri does; page 1 drops the parameter.
func pageURL(r *http.Request, page int) *string {
	if page == 1 {
		return linkWith(r, "page", "")
	}
	return linkWith(r, "page", strconv.Itoa(page))
}

// linkWith returns the request's absolute URL with one query parameter set
// (or removed, for "").
func linkWith(r *http.Request, name, value string) *string {
	u, err := url.ParseRequestURI(r.RequestURI)
	if err != nil {
		u = &url.URL{Path: r.URL.Path}
	}
	q := u.Query()
	if value == "" {
		q.Del(name)
	} else {
		q.Set(name, value)
	}
	u.RawQuery = q.Encode()
	u.Scheme, u.Host = "http", r.Host
	if r.TLS != nil {
		u.Scheme = "https"
	}
	s := u.String()
	return &s
}

// body reads a JSON request body: none is nil data; another media type is
// 415, too large 413, malformed 400.
func (h *Handler) body(w http.ResponseWriter, r *http.Request) (json.RawMessage, error) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return nil, &streamapi.Error{Code: eTooLarge, Message: fmt.Sprintf("Request body is larger than %d bytes.", h.cfg.MaxBodyBytes)}
	case err != nil:
		return nil, &streamapi.Error{Code: streamapi.EINVALID, Message: "Could not read the request body."}
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		return nil, nil
	}
	ct := r.Header.Get("Content-Type")
	mt, _, perr := mime.ParseMediaType(ct)
	if ct == "" || perr != nil || mt != "application/json" && !strings.HasSuffix(mt, "+json") {
		return nil, &streamapi.Error{Code: eMediaType, Message: fmt.Sprintf("Unsupported media type %q in request.", ct)}
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, &streamapi.Error{Code: streamapi.EINVALID, Message: "JSON parse error - " + err.Error()}
	}
	return b, nil
}

// queryData turns a safe action's query parameters into its data: each
// name to its value (the last one when repeated).
func queryData(q url.Values) json.RawMessage {
	m := make(map[string]string, len(q))
	for k, vs := range q {
		if k == "token" {
			continue // a credential (jwtauth reads it), not the action's data
		}
		m[k] = vs[len(vs)-1]
	}
	b, _ := json.Marshal(m)
	return b
}

// root answers GET / with each stream's URL, as DRF's DefaultRouter.
func (h *Handler) root(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.notAllowed(w, r, []string{http.MethodGet})
		return
	}
	base := "http://" + r.Host
	if r.TLS != nil {
		base = "https://" + r.Host
	}
	prefix := strings.TrimSuffix(r.RequestURI, "?"+r.URL.RawQuery)
	prefix = strings.TrimSuffix(prefix, "/")
	out := make(map[string]string, len(h.streams))
	for _, s := range h.streams {
		out[s] = base + prefix + "/" + s + "/"
	}
	writeJSON(w, http.StatusOK, out)
}

// writeJSON answers v as JSON. Unlike the WebSocket's frames, the body
// does not escape <, > and & (DRF does not either): it is served as
// application/json, never as HTML.
func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	b := []byte(`{"detail":"Internal server error."}`)
	if err := enc.Encode(v); err != nil {
		status = http.StatusInternalServerError
	} else {
		b = bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// Error codes of this surface only.
const (
	eTooLarge  = "too_large"  // 413
	eMediaType = "media_type" // 415
)

// statuses maps error codes to HTTP statuses: this surface's one table.
var statuses = map[string]int{
	streamapi.EINVALID:       http.StatusBadRequest,
	streamapi.EUNKNOWNACTION: http.StatusMethodNotAllowed,
	streamapi.EUNAUTHORIZED:  http.StatusUnauthorized,
	streamapi.EFORBIDDEN:     http.StatusForbidden,
	streamapi.ENOTFOUND:      http.StatusNotFound,
	streamapi.ECONFLICT:      http.StatusConflict,
	streamapi.EGONE:          http.StatusGone,
	streamapi.ETOOMANY:       http.StatusTooManyRequests,
	streamapi.ETIMEOUT:       http.StatusServiceUnavailable,
	eTooLarge:                http.StatusRequestEntityTooLarge,
	eMediaType:               http.StatusUnsupportedMediaType,
}

// DRF's texts for the errors whose wording DRF users know.
const (
	textUnauthorized = "Authentication credentials were not provided."
	textForbidden    = "You do not have permission to perform this action."
	textInternal     = "Internal server error."
)

// error answers err in DRF's shape; allow, when the error is an action
// the resource does not offer, fills the Allow header.
func (h *Handler) error(w http.ResponseWriter, r *http.Request, err error, allow []string) {
	err = streamapi.Timeout(err)
	code := streamapi.ErrorCode(err)
	status, ok := statuses[code]
	if !ok {
		status = http.StatusInternalServerError
	}
	var e *streamapi.Error
	errors.As(err, &e)
	var body any
	switch {
	case status == http.StatusInternalServerError:
		h.log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		body = detail(textInternal)
	case code == streamapi.EUNAUTHORIZED:
		// As DRF's token authentication: say how to authenticate.
		w.Header().Set("WWW-Authenticate", `Bearer realm="api"`)
		body = detail(textUnauthorized)
		if e != nil && e.Message != "" && e.Message != streamapi.PermissionDenied(nil).Message {
			body = detail(e.Message)
		}
	case code == streamapi.EFORBIDDEN:
		body = detail(textForbidden)
	case code == streamapi.EUNKNOWNACTION:
		h.notAllowed(w, r, allow)
		return
	case e != nil && e.FieldDetail() != nil:
		body = e.FieldDetail()
	case e != nil:
		body = detail(e.Message)
	}
	writeJSON(w, status, body)
}

// notAllowed answers 405 with the route's methods in Allow.
func (h *Handler) notAllowed(w http.ResponseWriter, r *http.Request, allow []string) {
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
	}
	writeJSON(w, http.StatusMethodNotAllowed, detail(fmt.Sprintf("Method %q not allowed.", r.Method)))
}

func detail(msg string) map[string]string { return map[string]string{"detail": msg} }
