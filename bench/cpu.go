package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of the CPU times in /proc: USER_HZ, 100 on every
// Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// cpuSample is the machine's CPU time and the broker's and the
// subscriber's at one moment, so a run's share of idle time and the CPU
// the other processes spent on its messages can be compared between
// contenders.
type cpuSample struct {
	busy, idle time.Duration
	broker     time.Duration
	subscriber time.Duration
}

// sampleCPU reads /proc/stat and the two helper processes' stat files.
// A field that cannot be read stays zero; the figures built from it are
// then left out of the report.
func (e *env) sampleCPU() cpuSample {
	var s cpuSample
	s.busy, s.idle = machineCPU()
	s.broker = processCPU(e.broker.cmd.Process.Pid)
	s.subscriber = processCPU(e.sub.cmd.Process.Pid)
	return s
}

// cpuUse is the machine's idle share and the helpers' CPU time between
// two samples.
type cpuUse struct {
	// IdleShare is the fraction of all CPUs' time that was idle or
	// waiting for I/O.
	IdleShare  float64
	Broker     time.Duration
	Subscriber time.Duration
}

func (s cpuSample) until(end cpuSample) cpuUse {
	busy, idle := end.busy-s.busy, end.idle-s.idle
	var share float64
	if busy+idle > 0 {
		share = float64(idle) / float64(busy+idle)
	}
	return cpuUse{IdleShare: share, Broker: end.broker - s.broker, Subscriber: end.subscriber - s.subscriber}
}

// add sums the use of consecutive runs; IdleShare is weighted by elapsed.
func (u cpuUse) add(v cpuUse, uElapsed, vElapsed time.Duration) cpuUse {
	total := uElapsed + vElapsed
	var share float64
	if total > 0 {
		share = (u.IdleShare*float64(uElapsed) + v.IdleShare*float64(vElapsed)) / float64(total)
	}
	return cpuUse{IdleShare: share, Broker: u.Broker + v.Broker, Subscriber: u.Subscriber + v.Subscriber}
}

// machineCPU returns the busy and the idle (idle plus iowait) time of all
// CPUs from the first line of /proc/stat.
func machineCPU() (busy, idle time.Duration) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(data), "\n")
	fields := strings.Fields(line)
	if len(fields) < 6 || fields[0] != "cpu" {
		return 0, 0
	}
	for i, f := range fields[1:] {
		n, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return 0, 0
		}
		// Fields: user nice system idle iowait irq softirq steal guest
		// guest_nice. Guest time is already counted in user and nice.
		switch {
		case i == 3 || i == 4:
			idle += time.Duration(n) * clockTick
		case i < 8:
			busy += time.Duration(n) * clockTick
		}
	}
	return busy, idle
}

// processCPU returns the user and system time of a running process.
func processCPU(pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name in parentheses may hold spaces; fields are
	// counted after its closing parenthesis.
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return 0
	}
	fields := strings.Fields(string(data[i+1:]))
	if len(fields) < 13 {
		return 0
	}
	utime, err1 := strconv.ParseUint(fields[11], 10, 64)
	stime, err2 := strconv.ParseUint(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return time.Duration(utime+stime) * clockTick
}
