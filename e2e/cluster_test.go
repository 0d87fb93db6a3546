package e2e_test

// Several streamapi processes (the cmd/streamapi binary) on one PostgreSQL
// database, with events crossing between them through Redis or NATS: the
// deployment of docs/deploy.md, against the real local services. Each test
// has a fresh database (testenv.Postgres) and, where it restarts a broker,
// a broker process of its own.

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/streamapi/streamapi/client"
	"github.com/streamapi/streamapi/internal/testenv"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// binary builds cmd/streamapi once per test run.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "streamapi-e2e-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "streamapi")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/streamapi/streamapi/cmd/streamapi").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// node is one streamapi process.
type node struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	addr string // host:port
	exit chan error

	mu   sync.Mutex
	logs strings.Builder
}

var servingRE = regexp.MustCompile(`addr=http://(\S+)`)

// startNode starts a node on db and broker with extra flags and waits
// until it serves.
func startNode(t *testing.T, name, db, broker string, flags ...string) *node {
	t.Helper()
	args := append([]string{"--addr", "127.0.0.1:0", "--db", db, "--broker", broker, "--no-debug", "--log-level", "debug"}, flags...)
	cmd := exec.Command(binary(t), args...)
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "STREAMAPI_BROKER_PREFIX="+prefixFor(t))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	n := &node{t: t, name: name, cmd: cmd, exit: make(chan error, 1)}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			n.mu.Lock()
			n.logs.WriteString(line + "\n")
			n.mu.Unlock()
			if m := servingRE.FindStringSubmatch(line); m != nil && strings.Contains(line, "msg=serving") {
				addr <- m[1]
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		n.exit <- cmd.Wait()
	}()
	t.Cleanup(func() {
		n.kill()
		if t.Failed() {
			t.Logf("node %s log:\n%s", n.name, n.log())
		}
	})
	select {
	case n.addr = <-addr:
	case err := <-n.exit:
		t.Fatalf("node %s exited at start: %v\n%s", name, err, n.log())
	case <-time.After(30 * time.Second):
		t.Fatalf("node %s did not start within 30 s\n%s", name, n.log())
	}
	return n
}

func (n *node) log() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.logs.String()
}

// kill sends SIGKILL and waits for the process to go.
func (n *node) kill() {
	if n.cmd.ProcessState != nil {
		return
	}
	_ = n.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-n.exit:
	case <-time.After(10 * time.Second):
	}
}

func (n *node) ws() string { return "ws://" + n.addr + "/ws" }

func (n *node) dial(t *testing.T) *client.Client {
	t.Helper()
	c, err := client.Dial(tctx(t), n.ws(), &client.Options{EventBuffer: 1 << 16, UnmatchedBuffer: 1 << 16})
	if err != nil {
		t.Fatalf("dial node %s: %v", n.name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

var (
	prefixMu sync.Mutex
	prefixes = map[*testing.T]string{}
)

// prefixFor gives the nodes of one test a broker prefix of their own, so
// tests running at once on the shared Redis and NATS do not hear each
// other.
func prefixFor(t *testing.T) string {
	prefixMu.Lock()
	defer prefixMu.Unlock()
	if p := prefixes[t]; p != "" {
		return p
	}
	p := testenv.Name("e2e_") + "."
	prefixes[t] = p
	return p
}

// event is a Channels API event as a recorder keeps it.
type event struct {
	Stream string
	Action string
	PK     int64
	Seq    int64
	Data   map[string]any
}

// recorder subscribes one connection to every create, update and delete of
// a stream with raw requests, so that events reach it in arrival order
// (client.Unmatched), and keeps them.
type recorder struct {
	t  *testing.T
	c  *client.Client
	mu sync.Mutex
	ev []event
}

func record(t *testing.T, n *node, stream string, since int64) *recorder {
	t.Helper()
	r := &recorder{t: t, c: n.dial(t)}
	go func() {
		for b := range unmatchedUntilDone(r.c) {
			var f struct {
				Stream  string `json:"stream"`
				Payload struct {
					Action string          `json:"action"`
					PK     int64           `json:"pk"`
					Seq    int64           `json:"seq"`
					Data   map[string]any  `json:"data"`
					Model  json.RawMessage `json:"model"`
				} `json:"payload"`
			}
			if json.Unmarshal(b, &f) != nil || f.Payload.Model == nil {
				continue // not an event
			}
			r.mu.Lock()
			r.ev = append(r.ev, event{f.Stream, f.Payload.Action, f.Payload.PK, f.Payload.Seq, f.Payload.Data})
			r.mu.Unlock()
		}
	}()
	for _, action := range []string{"create", "update", "delete"} {
		data := map[string]any{"action": action}
		if since >= 0 {
			data["since"] = since
		}
		rep, err := r.c.Request(tctx(t), stream, client.Payload{Action: "subscribe", Data: data})
		if err != nil || rep.Status != 200 {
			t.Fatalf("subscribe %s on node %s: %v %v", action, n.name, err, rep)
		}
	}
	return r
}

// unmatchedUntilDone returns the client's unmatched frames until it closes.
func unmatchedUntilDone(c *client.Client) <-chan []byte {
	out := make(chan []byte, 1024)
	go func() {
		defer close(out)
		for {
			select {
			case b := <-c.Unmatched():
				out <- b
			case <-c.Done():
				for {
					select {
					case b := <-c.Unmatched():
						out <- b
					default:
						return
					}
				}
			}
		}
	}()
	return out
}

func (r *recorder) events() []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]event(nil), r.ev...)
}

// waitSeq waits until the recorder holds an event with seq last, and
// returns what it holds then.
func (r *recorder) waitSeq(last int64, within time.Duration) []event {
	r.t.Helper()
	deadline := time.Now().Add(within)
	for {
		evs := r.events()
		if len(evs) > 0 && evs[len(evs)-1].Seq >= last {
			return evs
		}
		if time.Now().After(deadline) {
			got := int64(0)
			if len(evs) > 0 {
				got = evs[len(evs)-1].Seq
			}
			r.t.Fatalf("events up to seq %d within %v; got %d events, last seq %d", last, within, len(evs), got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// exactlyOnceInOrder checks that r holds seqs from+1..to, each once, in
// order, and still does a moment later (nothing repeated after the last).
func (r *recorder) exactlyOnceInOrder(from, to int64) []event {
	r.t.Helper()
	r.waitSeq(to, 15*time.Second)
	time.Sleep(300 * time.Millisecond)
	evs := r.events()
	if n := r.c.Dropped(); n > 0 {
		r.t.Fatalf("the recording client dropped %d frames (its buffer was full)", n)
	}
	want := from + 1
	for i, e := range evs {
		if e.Seq != want {
			at := map[int64][]int{}
			for j, x := range evs {
				at[x.Seq] = append(at[x.Seq], j)
			}
			var missing []int64
			for q := from + 1; q <= to; q++ {
				if len(at[q]) == 0 {
					missing = append(missing, q)
				}
			}
			r.t.Fatalf("event %d has seq %d, want %d (a gap, a repeat or out of order); %d events; seq %d at %v; missing %v", i, e.Seq, want, len(evs), want, at[want], missing)
		}
		want++
	}
	if want != to+1 {
		r.t.Fatalf("events end at seq %d, want %d", want-1, to)
	}
	return evs
}

// lastSeq reads the last seq of model from the database.
func lastSeq(t *testing.T, db *sql.DB, model string) int64 {
	t.Helper()
	var n int64
	if err := db.QueryRow("SELECT COALESCE((SELECT seq FROM streamapi_seq WHERE model = $1), 0)", model).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// write performs one action on a question and returns the status and the
// object, over one surface.
type write func(action string, pk int64, data map[string]any) (status int, obj []byte, err error)

// overWebSocket writes through a WebSocket connection to n.
func overWebSocket(t *testing.T, n *node) write {
	c := n.dial(t)
	return func(action string, pk int64, data map[string]any) (int, []byte, error) {
		p := client.Payload{Action: action, Data: data}
		if pk != 0 {
			p.PK = pk
		}
		r, err := c.Request(context.Background(), "questions", p)
		if err != nil {
			return 0, nil, err
		}
		return r.Status, r.Data, nil
	}
}

// overREST writes through n's REST surface. Its statuses are REST's: the
// delete answers 204.
func overREST(n *node) write {
	methods := map[string]string{"create": "POST", "patch": "PATCH", "delete": "DELETE"}
	return func(action string, pk int64, data map[string]any) (int, []byte, error) {
		url := "http://" + n.addr + "/api/questions/"
		if pk != 0 {
			url += strconv.FormatInt(pk, 10) + "/"
		}
		var body io.Reader
		if data != nil {
			b, _ := json.Marshal(data)
			body = bytes.NewReader(b)
		}
		req, err := http.NewRequest(methods[action], url, body)
		if err != nil {
			return 0, nil, err
		}
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		if res.StatusCode == http.StatusNoContent {
			res.StatusCode = http.StatusOK // as the WebSocket's delete
		}
		return res.StatusCode, b, err
	}
}

// writes makes a stream of writes on n from conns clients at once, half
// over the WebSocket and half over REST: each creates a question, patches
// it twice and deletes every other one, for as long as more(i) says. It
// returns the number of writes acknowledged.
func writes(t *testing.T, n *node, conns int, more func(i int) bool, pause time.Duration) int {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	acked := 0
	for k := 0; k < conns; k++ {
		do := overWebSocket(t, n)
		if k%2 == 1 {
			do = overREST(n)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ack := func(status int, err error, want int) bool {
				if err != nil || status != want {
					t.Errorf("write on node %s: status %d, %v", n.name, status, err)
					return false
				}
				mu.Lock()
				acked++
				mu.Unlock()
				return true
			}
			for i := 0; more(i); i++ {
				status, obj, err := do("create", 0, map[string]any{"question_text": fmt.Sprintf("c%d-%d", k, i), "pub_date": "2026-11-29T10:00:00Z"})
				if !ack(status, err, 201) {
					return
				}
				var q struct{ ID int64 }
				_ = json.Unmarshal(obj, &q)
				for j := 0; j < 2; j++ {
					status, _, err = do("patch", q.ID, map[string]any{"question_text": fmt.Sprintf("c%d-%d-%d", k, i, j)})
					if !ack(status, err, 200) {
						return
					}
				}
				if i%2 == 1 {
					status, _, err = do("delete", q.ID, nil)
					if !ack(status, err, 200) {
						return
					}
				}
				if pause > 0 {
					time.Sleep(pause)
				}
			}
		}()
	}
	wg.Wait()
	return acked
}

// brokers are the buses the cluster tests run on.
func brokers(t *testing.T) map[string]string {
	return map[string]string{"redis": testenv.Redis(t), "nats": testenv.NATS(t)}
}

func TestCluster_EveryEventOnceInOrderAcrossNodes(t *testing.T) {
	for name, url := range brokers(t) {
		t.Run(name, func(t *testing.T) {
			dsn := testenv.Postgres(t)
			// No polling of the log: events must cross through the broker.
			a := startNode(t, "A", dsn, url, "--change-poll", "1h")
			b := startNode(t, "B", dsn, url, "--change-poll", "1h")
			rec := record(t, a, "questions", -1)
			n := writes(t, b, 4, func(i int) bool { return i < 25 }, 0)
			last := lastSeq(t, testenv.SQL(t, dsn), "polls.question")
			if int64(n) != last {
				t.Fatalf("%d writes acknowledged, the log's last seq is %d", n, last)
			}
			evs := rec.exactlyOnceInOrder(0, last)
			counts := map[string]int{}
			for _, e := range evs {
				counts[e.Action]++
			}
			// 4 clients (2 WebSocket, 2 REST) × 25 questions: 100 creates,
			// 200 updates, 48 deletes.
			if counts["create"] != 100 || counts["update"] != 200 || counts["delete"] != 48 {
				t.Fatalf("events by kind %v, want 100 creates, 200 updates, 48 deletes", counts)
			}
			t.Logf("node A received %d events of writes made on node B over 2 WebSocket and 2 REST clients, through %s, seqs 1..%d, each once, in order", len(evs), name, last)
		})
	}
}

// privateBroker is a Redis or NATS server process of the test's own, which
// it can stop and start again on the same port.
type privateBroker struct {
	t    *testing.T
	kind string
	port int
	cmd  *exec.Cmd
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func startPrivateBroker(t *testing.T, kind string) *privateBroker {
	t.Helper()
	for _, bin := range map[string]string{"redis": "redis-server", "nats": "nats-server"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s is not installed: the broker-restart test runs its own", bin)
		}
	}
	p := &privateBroker{t: t, kind: kind, port: freePort(t)}
	p.start()
	t.Cleanup(p.stop)
	return p
}

func (p *privateBroker) url() string { return fmt.Sprintf("%s://127.0.0.1:%d", p.kind, p.port) }

func (p *privateBroker) start() {
	p.t.Helper()
	port := strconv.Itoa(p.port)
	if p.kind == "redis" {
		p.cmd = exec.Command("redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	} else {
		p.cmd = exec.Command("nats-server", "-a", "127.0.0.1", "-p", port)
	}
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", "127.0.0.1:"+port)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("private %s did not listen within 10 s", p.kind)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop kills the broker: connections drop, messages in flight are lost.
func (p *privateBroker) stop() {
	if p.cmd == nil || p.cmd.ProcessState != nil {
		return
	}
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
}

// TestCluster_BrokerRestart kills the broker in the middle of a write
// stream and starts it again: nothing is lost or repeated. Node A does not
// poll the log, so what reaches it after the restart came through the
// reconnected broker, and what was published while it was down was filled
// in from the log when the next message showed the gap.
func TestCluster_BrokerRestart(t *testing.T) {
	for _, kind := range []string{"redis", "nats"} {
		t.Run(kind, func(t *testing.T) {
			dsn := testenv.Postgres(t)
			br := startPrivateBroker(t, kind)
			a := startNode(t, "A", dsn, br.url(), "--change-poll", "1h")
			b := startNode(t, "B", dsn, br.url())
			rec := record(t, a, "questions", -1)
			stop := make(chan struct{})
			more := func(int) bool {
				select {
				case <-stop:
					return false
				default:
					return true
				}
			}
			done := make(chan int)
			go func() { done <- writes(t, b, 2, more, 5*time.Millisecond) }()
			time.Sleep(300 * time.Millisecond)
			br.stop()
			before := len(rec.events())
			time.Sleep(time.Second)
			during := len(rec.events())
			br.start()
			time.Sleep(3 * time.Second)
			close(stop)
			n := <-done
			last := lastSeq(t, testenv.SQL(t, dsn), "polls.question")
			if int64(n) != last {
				t.Fatalf("%d writes acknowledged, the log's last seq is %d", n, last)
			}
			rec.exactlyOnceInOrder(0, last)
			t.Logf("%s killed after %d events had arrived on node A, %d while it was down; node A received seqs 1..%d, each once, in order", kind, before, during-before, last)
		})
	}
}

// TestCluster_NodeKilled kills the writers' node (SIGKILL) in the middle of
// its writes: every change it committed is still delivered by the other.
func TestCluster_NodeKilled(t *testing.T) {
	dsn := testenv.Postgres(t)
	url := testenv.Redis(t)
	a := startNode(t, "A", dsn, url, "--change-poll", "200ms")
	b := startNode(t, "B", dsn, url)
	rec := record(t, a, "questions", -1)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var acked sync.Map // seqs of acknowledged creates, by pk
	for k := 0; k < 4; k++ {
		c := b.dial(t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				r, err := c.Request(context.Background(), "questions", client.Payload{Action: "create", Data: map[string]any{"question_text": fmt.Sprint(k, "-", i), "pub_date": "2026-11-29T10:00:00Z"}})
				if err != nil {
					return // the node is gone
				}
				if r.Status != 201 {
					t.Errorf("create on node B: %s", r.Raw)
					return
				}
				var q struct{ ID int64 }
				_ = json.Unmarshal(r.Data, &q)
				acked.Store(q.ID, true)
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	b.kill()
	close(stop)
	wg.Wait()
	// A COMMIT sent just before the kill may still be landing.
	time.Sleep(300 * time.Millisecond)
	last := lastSeq(t, testenv.SQL(t, dsn), "polls.question")
	if last == 0 {
		t.Fatal("no write committed before the kill")
	}
	evs := rec.exactlyOnceInOrder(0, last)
	got := map[int64]bool{}
	for _, e := range evs {
		got[e.PK] = true
	}
	missing := 0
	nacked := 0
	acked.Range(func(k, _ any) bool {
		nacked++
		if !got[k.(int64)] {
			missing++
		}
		return true
	})
	if missing > 0 {
		t.Fatalf("%d acknowledged creates were never delivered", missing)
	}
	t.Logf("node B killed after %d acknowledged creates; %d committed; node A delivered all %d, each once, in order", nacked, last, len(evs))
}

// TestCluster_ResumeOnTheOtherNode: a client that disconnects from node A,
// misses writes, and resumes on node B gets exactly what it missed.
func TestCluster_ResumeOnTheOtherNode(t *testing.T) {
	dsn := testenv.Postgres(t)
	url := testenv.NATS(t)
	a := startNode(t, "A", dsn, url)
	b := startNode(t, "B", dsn, url)
	w := a.dial(t)
	c := a.dial(t)
	sub, err := c.Subscribe(tctx(t), "questions", "create", nil)
	if err != nil {
		t.Fatal(err)
	}
	createQ(t, w, "seen")
	seen := next(t, sub)
	c.Close()
	var missed []int64
	for i := 0; i < 5; i++ {
		missed = append(missed, createQ(t, w, fmt.Sprint("missed ", i)))
	}
	c2 := b.dial(t)
	sub2, err := c2.SubscribeSince(tctx(t), "questions", "create", nil, seen.Seq)
	if err != nil {
		t.Fatal(err)
	}
	// Node B may not have delivered the last writes yet: those come live.
	for i, id := range missed {
		ev := next(t, sub2)
		if compact(ev.PK) != fmtID(id) || ev.Seq != seen.Seq+int64(i)+1 {
			t.Fatalf("event %d on node B: %s, want the create of %d, seq %d", i, ev.Raw, id, seen.Seq+int64(i)+1)
		}
	}
	live := createQ(t, w, "live")
	if ev := next(t, sub2); compact(ev.PK) != fmtID(live) {
		t.Fatalf("live event %s, want the create of %d", ev.Raw, live)
	}
	none(t, sub2, "after the live event")
}

// TestCluster_ResumePastRetention: with a retention of two seconds, a
// client that was away longer is told to resync; one that was not resumes.
func TestCluster_ResumePastRetention(t *testing.T) {
	dsn := testenv.Postgres(t)
	url := testenv.Redis(t)
	a := startNode(t, "A", dsn, url, "--change-retention", "2s")
	b := startNode(t, "B", dsn, url, "--change-retention", "2s")
	w := a.dial(t)
	createQ(t, w, "old")
	time.Sleep(3500 * time.Millisecond) // the trim runs every second
	createQ(t, w, "new")
	c := b.dial(t)
	do(t, c, "questions", client.Payload{Action: "subscribe", Data: map[string]any{"action": "create", "since": 0}}).want(t, 410, `["resync required"]`)
	sub, err := c.SubscribeSince(tctx(t), "questions", "create", nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	if ev := next(t, sub); ev.Seq != 2 {
		t.Fatalf("resumed after seq 1: %s, want seq 2", ev.Raw)
	}
}

// TestCluster_DirectSQL: an UPDATE and a DELETE typed as in psql reach the
// subscribers of every node, in the resource's JSON.
func TestCluster_DirectSQL(t *testing.T) {
	dsn := testenv.Postgres(t)
	url := testenv.Redis(t)
	a := startNode(t, "A", dsn, url)
	b := startNode(t, "B", dsn, url)
	id := createQ(t, a.dial(t), "typed in the app")
	// From seq 1 on: node B may not have delivered the create yet.
	ra := record(t, a, "questions", 1)
	rb := record(t, b, "questions", 1)
	db := testenv.SQL(t, dsn)
	if _, err := db.Exec("UPDATE polls_question SET question_text = 'typed in psql' WHERE id = $1", id); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("DELETE FROM polls_question WHERE id = $1", id); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("INSERT INTO polls_question (question_text, pub_date) VALUES ('inserted in psql', now())"); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*recorder{ra, rb} {
		evs := r.exactlyOnceInOrder(1, 4)
		if evs[0].Action != "update" || evs[0].PK != id || evs[0].Data["question_text"] != "typed in psql" || evs[0].Data["pub_date"] != "2026-11-29T10:00:00Z" {
			t.Fatalf("update event %+v", evs[0])
		}
		if evs[1].Action != "delete" || evs[1].PK != id || evs[1].Data["question_text"] != "typed in psql" {
			t.Fatalf("delete event %+v", evs[1])
		}
		if evs[2].Action != "create" || evs[2].Data["question_text"] != "inserted in psql" {
			t.Fatalf("create event %+v", evs[2])
		}
	}
}
