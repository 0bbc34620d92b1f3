package e2e

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"time"
)

// cpuSample is the CPU time used so far by the daemons and by the whole
// machine, at one moment.
type cpuSample struct {
	at      time.Time
	daemons float64 // seconds of CPU of the daemon processes
	busy    float64 // seconds of CPU the machine spent on anything but idling
	steal   float64 // of busy, the seconds the hypervisor gave to other guests
}

// clockTicks is USER_HZ, the unit of /proc's CPU times (100 on Linux).
const clockTicks = 100

// procCPU is the user and system CPU seconds of process pid (0 when gone).
func procCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name, in parentheses, may hold spaces: fields count from after it.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 13 {
		return 0
	}
	user, _ := strconv.ParseFloat(string(f[11]), 64)
	sys, _ := strconv.ParseFloat(string(f[12]), 64)
	return (user + sys) / clockTicks
}

// machineBusy is the CPU seconds the machine spent other than idle or
// waiting for I/O, over all its CPUs (the first line of /proc/stat), and
// of those the steal: time this virtual machine was ready to run and the
// hypervisor ran another guest. Steal is counted busy since the machine's
// processes were kept from running; it is printed apart because it varies
// with the neighbours, not with what this benchmark does.
func machineBusy() (busy, steal float64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := bytes.Fields(line)
	for i, x := range f[1:] {
		// idle, iowait; and guest, guest_nice, which user and nice already count.
		if i == 3 || i == 4 || i >= 8 {
			continue
		}
		v, _ := strconv.ParseFloat(string(x), 64)
		busy += v
		if i == 7 {
			steal = v
		}
	}
	return busy / clockTicks, steal / clockTicks
}

// cpuSampler samples the CPU of the daemons (pids) and of the machine every
// 100 ms until stop is called, which returns the samples.
func cpuSampler(pids []int) (stop func() []cpuSample) {
	done, out := make(chan struct{}), make(chan []cpuSample, 1)
	go func() {
		var s []cpuSample
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			var d float64
			for _, p := range pids {
				d += procCPU(p)
			}
			busy, steal := machineBusy()
			s = append(s, cpuSample{time.Now(), d, busy, steal})
			select {
			case <-done:
				out <- s
				return
			case <-t.C:
			}
		}
	}()
	return func() []cpuSample { close(done); return <-out }
}

// cpuShare is how many CPUs the daemons, and the machine as a whole, kept
// busy on average over a window.
type cpuShare struct {
	Window                  time.Duration
	Daemons, Machine, Steal float64 // cores
}

// shareBetween is the share over the samples within [from, to], nil when
// fewer than two samples fall within it.
func shareBetween(s []cpuSample, from, to time.Time) *cpuShare {
	var a, b *cpuSample
	for i := range s {
		if s[i].at.Before(from) || s[i].at.After(to) {
			continue
		}
		if a == nil {
			a = &s[i]
		}
		b = &s[i]
	}
	if a == nil || b == a {
		return nil
	}
	w := b.at.Sub(a.at)
	return &cpuShare{Window: w, Daemons: (b.daemons - a.daemons) / w.Seconds(), Machine: (b.busy - a.busy) / w.Seconds(),
		Steal: (b.steal - a.steal) / w.Seconds()}
}

func (c *cpuShare) String() string {
	return c.of("daemons")
}

// of is String with the sampled processes called who.
func (c *cpuShare) of(who string) string {
	if c == nil {
		return "not measured (window too short)"
	}
	return fmt.Sprintf("%s %.2f of %d cores, whole machine %.2f, of it stolen by the hypervisor %.2f (sampled over %s)",
		who, c.Daemons, runtime.NumCPU(), c.Machine, c.Steal, c.Window.Round(100*time.Millisecond))
}
