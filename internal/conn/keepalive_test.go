package conn

import (
	"fmt"
	"testing"
	"time"
)

// The scan period divides the pong timeout and is at most half the
// shorter of the two durations.
func TestKeepalive_ScanPeriod(t *testing.T) {
	for _, c := range []struct{ interval, timeout time.Duration }{
		{25 * time.Second, 10 * time.Second},
		{time.Second, 400 * time.Millisecond},
		{time.Second, 10 * time.Second},
		{10 * time.Second, time.Second},
		{3*time.Second + 7*time.Millisecond, 333 * time.Millisecond},
		{time.Minute, time.Minute},
		{7 * time.Second, 1234567891}, // no round division
	} {
		s := scanPeriod(c.interval, c.timeout)
		parts := (c.timeout + s - 1) / s
		if s > min(c.interval, c.timeout)/2+time.Duration(parts) {
			t.Errorf("%v/%v: scan %v longer than half the shorter", c.interval, c.timeout, s)
		}
		if over := s*parts - c.timeout; over < 0 || over >= parts {
			t.Errorf("%v/%v: %d scans of %v are %v off the timeout", c.interval, c.timeout, parts, s, over)
		}
	}
}

// sim runs the keep-alive's decisions against one connection on a fake
// clock: scans every period from phase, the connection opened at open.
// reply is the delay after a ping at which the peer's pong arrives
// (negative: never). It returns the pings' times and the close's (0: still
// open) up to end.
func sim(interval, timeout, phase, open, reply, end time.Duration) (pings []time.Duration, closed time.Duration) {
	period := scanPeriod(interval, timeout)
	seen, pinged := int64(open), int64(0)
	var pong int64 = -1 // when the pending pong arrives
	for now := phase; now <= end; now += period {
		if now < open {
			continue
		}
		if pong >= 0 && pong <= int64(now) {
			seen, pong = pong, -1
		}
		switch probeAt(int64(now), seen, pinged, interval, closeWait(interval, timeout), false) {
		case probePing:
			pinged = int64(now)
			pings = append(pings, now)
			if reply >= 0 {
				pong = int64(now + reply)
				if reply == 0 {
					seen, pong = pinged+1, -1 // answered at once (after the ping)
				}
			}
		case probeClose:
			return pings, now
		}
	}
	return pings, 0
}

// phases returns n phases spread over one scan period, with both edges.
func phases(period time.Duration, n int) []time.Duration {
	out := []time.Duration{0, 1, period - 1}
	for i := 1; i < n; i++ {
		out = append(out, period*time.Duration(i)/time.Duration(n))
	}
	return out
}

var keepaliveCases = []struct{ interval, timeout time.Duration }{
	{25 * time.Second, 10 * time.Second}, // the defaults
	{time.Second, 400 * time.Millisecond},
	{time.Second, 10 * time.Second},
	{10 * time.Second, time.Second},
	{3*time.Second + 7*time.Millisecond, 333 * time.Millisecond},
	{7 * time.Second, 1234567891},
}

// A peer that answers every ping within the timeout is never closed, over
// 30 ping cycles, whatever the phase of its connection against the scans
// and however late (within the timeout) its pongs come; and it is pinged
// once per cycle, PingInterval to PingInterval + one scan after it was
// last heard.
func TestKeepalive_AnsweringPeerStays(t *testing.T) {
	for _, c := range keepaliveCases {
		period := scanPeriod(c.interval, c.timeout)
		for _, reply := range []time.Duration{0, time.Millisecond, c.timeout / 2, c.timeout - 1} {
			for _, ph := range phases(period, 37) {
				for _, open := range []time.Duration{0, period / 3, 5*period - 1} {
					name := fmt.Sprintf("%v/%v reply %v phase %v open %v", c.interval, c.timeout, reply, ph, open)
					end := open + 30*(c.interval+c.timeout+period)
					pings, closed := sim(c.interval, c.timeout, ph, open, reply, end)
					if closed != 0 {
						t.Fatalf("%s: closed at %v after %d pings", name, closed, len(pings))
					}
					if len(pings) < 30 {
						t.Fatalf("%s: %d pings in 30 cycles", name, len(pings))
					}
					last := open
					for _, p := range pings {
						if p-last < c.interval || p-last >= c.interval+period {
							t.Fatalf("%s: pinged %v after the last sign of life (want [%v, %v))", name, p-last, c.interval, c.interval+period)
						}
						last = p + reply
						if reply == 0 {
							last = p + 1
						}
					}
				}
			}
		}
	}
}

// A silent peer is closed no earlier than PingInterval + PongTimeout after
// it was last heard, and no later than one scan after that, whatever the
// phase.
func TestKeepalive_SilentPeerCloses(t *testing.T) {
	for _, c := range keepaliveCases {
		period := scanPeriod(c.interval, c.timeout)
		for _, ph := range phases(period, 101) {
			for _, open := range []time.Duration{0, 1, period / 2, 7*period + 3} {
				pings, closed := sim(c.interval, c.timeout, ph, open, -1, open+10*(c.interval+c.timeout))
				name := fmt.Sprintf("%v/%v phase %v open %v", c.interval, c.timeout, ph, open)
				silent := closed - open
				if closed == 0 || silent < c.interval+c.timeout || silent > c.interval+c.timeout+period+period/1000 {
					t.Fatalf("%s: closed after %v of silence (want [%v, %v])", name, silent, c.interval+c.timeout, c.interval+c.timeout+period)
				}
				if parts := (c.timeout + period - 1) / period; len(pings) != 1 || closed-pings[0] < c.timeout || closed-pings[0] >= c.timeout+parts {
					t.Fatalf("%s: %d pings, the close %v after the ping (want one ping, closed %v after it)", name, len(pings), closed-pings[0], c.timeout)
				}
			}
		}
	}
}

// A pong that comes after the timeout is too late: the scan at the timeout
// closes first. (A ticker that fired late for the ping, by up to half a
// scan, still closes at the scan PongTimeout after the ping was due.)
func TestKeepalive_LatePongCloses(t *testing.T) {
	c := keepaliveCases[1]
	_, closed := sim(c.interval, c.timeout, 0, 0, c.timeout+1, 10*c.interval)
	if closed == 0 {
		t.Fatal("a pong later than the timeout kept the connection")
	}
	period := scanPeriod(c.interval, c.timeout)
	jitter := period/2 - 1
	if probeAt(int64(c.interval+c.timeout), 0, int64(c.interval+jitter), c.interval, closeWait(c.interval, c.timeout), false) != probeClose {
		t.Fatal("a ping scan late by just under half a scan and the close scan on time: not closed at that scan")
	}
}

// The boundaries of one decision.
func TestKeepalive_ProbeAt(t *testing.T) {
	const i, to = int64(10), int64(4) // to: the wait after a ping
	for _, c := range []struct {
		now, seen, pinged int64
		held              bool
		want              probe
	}{
		{now: 9, seen: 0, want: probeNone},                          // silent just short of the interval
		{now: 10, seen: 0, want: probePing},                         // the interval: ping
		{now: 13, seen: 0, pinged: 10, want: probeNone},             // waiting for the pong
		{now: 14, seen: 0, pinged: 10, want: probeClose},            // the timeout: close
		{now: 14, seen: 0, pinged: 10, held: true, want: probeNone}, // the server is not reading it
		{now: 14, seen: 11, pinged: 10, want: probeNone},            // answered: nothing
		{now: 21, seen: 11, pinged: 10, want: probePing},            // answered, then silent again: ping
		{now: 100, seen: 10, pinged: 10, want: probePing},           // a frame with the ping's own instant counts as heard
	} {
		if got := probeAt(c.now, c.seen, c.pinged, time.Duration(i), time.Duration(to), c.held); got != c.want {
			t.Errorf("probeAt(now %d, seen %d, pinged %d, held %v) = %d, want %d", c.now, c.seen, c.pinged, c.held, got, c.want)
		}
	}
}
