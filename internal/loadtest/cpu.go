package loadtest

import (
	"fmt"
	"os"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat: 100
// on Linux on every architecture Go supports.
const clockTicks = 100

// CPUTime returns a process's user plus system CPU time so far, from
// /proc/PID/stat (the process itself when pid is 0).
func CPUTime(pid int) (time.Duration, error) {
	path := "/proc/self/stat"
	if pid > 0 {
		path = fmt.Sprintf("/proc/%d/stat", pid)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces:
	// the fields that follow start after the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("loadtest: %s: unexpected format", path)
	}
	f := strings.Fields(s[i+1:])
	// After the name: state is field 3, utime 14, stime 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("loadtest: %s: unexpected format", path)
	}
	var utime, stime int64
	if _, err := fmt.Sscan(f[11], &utime); err != nil {
		return 0, err
	}
	if _, err := fmt.Sscan(f[12], &stime); err != nil {
		return 0, err
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// cpuMeter measures the CPU the tool (and the server, with its PID) used
// over a run.
type cpuMeter struct {
	pid         int
	at          time.Time
	tool, serve time.Duration
}

func startCPU(serverPID int) cpuMeter {
	m := cpuMeter{pid: serverPID, at: time.Now()}
	m.tool, _ = CPUTime(0)
	if serverPID > 0 {
		m.serve, _ = CPUTime(serverPID)
	}
	return m
}

// stop writes the CPU used since start, per second of wall time, into r.
func (m cpuMeter) stop(r *Result) {
	wall := time.Since(m.at).Seconds()
	if t, err := CPUTime(0); err == nil && wall > 0 {
		r.ToolCPU = (t - m.tool).Seconds() / wall
	}
	if m.pid > 0 {
		if t, err := CPUTime(m.pid); err == nil && wall > 0 {
			r.ServerCPU = (t - m.serve).Seconds() / wall
		}
	}
}
