package conn

import (
	"time"
)

// Keep-alive. Each connection keeps when it last heard from its peer
// (seen: any frame, ping or pong) and when the server last pinged it
// (pinged). One goroutine per server scans every connection at a fixed
// period and decides, from those two instants alone, what each needs:
//
//   - heard from since the last ping (or never pinged), and silent for
//     PingInterval: ping it;
//   - pinged, and silent since, for PongTimeout after the ping: close it;
//   - otherwise nothing.
//
// A peer that answers pings therefore stays connected indefinitely: the
// close needs a ping left unanswered for a whole PongTimeout. A silent
// peer is pinged at the first scan PingInterval after it was last heard,
// and closed at the scan PongTimeout after that ping; the scan period
// divides PongTimeout, so that scan falls exactly PongTimeout after the
// ping. The close comes within PingInterval + PongTimeout + one scan of
// the last sign of life, and never before PingInterval + PongTimeout.

// probe is what a scan does to one connection.
type probe uint8

const (
	probeNone  probe = iota
	probePing        // send a ping
	probeClose       // close: the ping went unanswered
)

// epoch is the origin of the keep-alive's clock: nanoseconds since it are
// read from the monotonic clock, so a change of the wall clock neither
// pings nor closes anyone.
var epoch = time.Now()

// nanotime returns the keep-alive's clock, always above zero.
func nanotime() int64 { return int64(time.Since(epoch)) + 1 }

// probeAt decides, at a scan at now, for a connection last heard from at
// seen and last pinged at pinged (zero: never; nanotime's clock). wait is
// how long after a ping an unanswered connection is closed: PongTimeout
// less half a scan (closeWait), so that the scan PongTimeout after the
// ping closes it even when the ticker fired late for the ping and early
// for that scan.
// held is true while the server itself is not reading the connection (its
// frames wait for the rate limit or for the frames before them): a pong
// cannot be read then, so silence proves nothing.
func probeAt(now, seen, pinged int64, interval, wait time.Duration, held bool) probe {
	if pinged > seen { // pinged, and nothing heard since
		if !held && now-pinged >= int64(wait) {
			return probeClose
		}
		return probeNone
	}
	if now-seen >= int64(interval) {
		return probePing
	}
	return probeNone
}

// scanPeriod returns how often the pinger scans: about half the shorter
// of the two durations at most, and a whole fraction of timeout, so that
// the scan that closes an unanswered connection falls timeout after the
// scan that pinged it (to the nanosecond).
func scanPeriod(interval, timeout time.Duration) time.Duration {
	limit := max(min(interval, timeout)/2, time.Millisecond)
	parts := (timeout + limit - 1) / limit
	// Rounded up: parts scans reach the timeout (by less than parts ns
	// more), never fall short of it by a scan.
	return max((timeout+parts-1)/parts, time.Millisecond)
}

// closeWait is probeAt's wait: the timeout less half a scan.
func closeWait(interval, timeout time.Duration) time.Duration {
	return timeout - scanPeriod(interval, timeout)/2
}

// scan probes every connection at now and acts on what it finds. It
// returns how many it pinged and closed.
func (u *Upgrader) scan(now int64) (pinged, closed int) {
	interval, timeout := u.opts.PingInterval, closeWait(u.opts.PingInterval, u.opts.PongTimeout)
	u.ping, u.drop = u.ping[:0], u.drop[:0]
	u.mu.Lock()
	for c := range u.conns {
		switch probeAt(now, c.lastSeen.Load(), c.pingedAt.Load(), interval, timeout, c.held.Load() > 0) {
		case probePing:
			c.pingedAt.Store(now)
			u.ping = append(u.ping, c)
		case probeClose:
			u.drop = append(u.drop, c)
		}
	}
	u.mu.Unlock()
	for _, c := range u.ping {
		// Its own goroutine: a full socket buffer must not hold up the
		// scan. A ping to a closed socket just fails.
		go c.writeControl(func() error { return c.ws.WritePing(nil) })
	}
	for _, c := range u.drop {
		go c.closeNow(ClosePolicy, "no pong within the timeout")
	}
	u.pings.Add(uint64(len(u.ping)))
	u.timeouts.Add(uint64(len(u.drop)))
	return len(u.ping), len(u.drop)
}

// pinger scans every scanPeriod until Shutdown. One goroutine serves
// every connection; a connection holds no timer.
func (u *Upgrader) pinger() {
	defer close(u.stopped)
	t := time.NewTicker(scanPeriod(u.opts.PingInterval, u.opts.PongTimeout))
	defer t.Stop()
	for {
		select {
		case <-u.stop:
			return
		case now := <-t.C:
			u.scan(int64(now.Sub(epoch)) + 1)
		}
	}
}
