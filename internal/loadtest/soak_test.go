package loadtest_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/streamapi/streamapi/examples/polls"
	"github.com/streamapi/streamapi/internal/loadtest"
	"github.com/streamapi/streamapi/internal/testenv"
	"github.com/streamapi/streamapi/server"
)

func shortSoak(urls ...string) loadtest.Soak {
	return loadtest.Soak{
		URLs: urls, Duration: 3 * time.Second,
		Writers: 3, Readers: 2, Subscribers: 30, Idle: 5,
		Think: 5 * time.Millisecond, MaxSession: 800 * time.Millisecond, MaxOffline: 200 * time.Millisecond,
		Servers: []loadtest.Server{{PID: os.Getpid()}},
	}
}

// A short soak of the polls app finds nothing wrong, and has done what it
// checks: every kind of write, resumes, events.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("a 3 s soak")
	}
	p := testenv.PollsServer(t)
	r, err := loadtest.RunSoak(context.Background(), shortSoak(p.WS))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", *r)
	if !r.OK() {
		t.Fatalf("soak found faults: %+v", r)
	}
	for _, kind := range []string{"create", "patch", "update", "vote", "delete"} {
		if r.Writes[kind] == 0 {
			t.Errorf("no %s acknowledged: %v", kind, r.Writes)
		}
	}
	if r.Reads == 0 || r.Resumes == 0 || r.Events == 0 || r.Expected != r.Events || r.RecorderEvents == 0 || r.Checked == 0 || r.VotesAcked == 0 {
		t.Fatalf("the soak did too little to judge: %+v", r)
	}
	if r.Memory[0].Start.RSSKiB == 0 || r.Memory[0].End.RSSKiB == 0 {
		t.Fatalf("memory not read: %+v", r.Memory)
	}
}

// Against a server that keeps no change log, resumes are refused: the
// soak says so.
func TestSoak_FindsRefusedResumes(t *testing.T) {
	if testing.Short() {
		t.Skip("a 3 s soak")
	}
	p := testenv.PollsServer(t, func(_ *polls.Options, c *server.Config) { c.ChangeLog = nil })
	r, err := loadtest.RunSoak(context.Background(), shortSoak(p.WS))
	if err != nil {
		t.Fatal(err)
	}
	if r.OK() || r.Resyncs == 0 || r.Failures["resync"] == 0 {
		t.Fatalf("no change log, yet the soak passed: %+v", r)
	}
}
