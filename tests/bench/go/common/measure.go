// SPDX-License-Identifier: MIT

// What a benchmark reads about the process, shared by the Go twins that
// print memory figures (each links this file: a symlink in its directory,
// since the twins build without modules): resident memory, minor page
// faults, and dTLB load misses in user space (perf_event_open on every
// thread, inherited by threads created later; -1 without hardware
// counters, as in most VMs).
package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"unsafe"
)

func rssKB() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return -1
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		l := s.Text()
		if strings.HasPrefix(l, "VmRSS:") {
			v, _ := strconv.ParseInt(strings.Fields(l)[1], 10, 64)
			return v
		}
	}
	return -1
}

// The process's minor page faults so far, or -1.
func minflt() int64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return -1
	}
	return ru.Minflt
}

// struct perf_event_attr as far as config1 (PERF_ATTR_SIZE_VER0, 64 bytes).
type perfAttr struct {
	typ, size              uint32
	config, samplePeriod   uint64
	sampleType, readFormat uint64
	flags                  uint64
	wakeupEvents, bpType   uint32
	config1                uint64
}

// dtlbOpen: a counter of dTLB load misses in user space on every thread of
// the process (inherit: threads they create later count too), as bench.h's
// dtlb_open; nil when there are no such counters.
func dtlbOpen() []int {
	attr := perfAttr{
		typ: 3, // PERF_TYPE_HW_CACHE
		// PERF_COUNT_HW_CACHE_DTLB | OP_READ << 8 | RESULT_MISS << 16
		config: 3 | 0<<8 | 1<<16,
		flags:  1<<1 | 1<<5 | 1<<6, // inherit, exclude_kernel, exclude_hv
	}
	attr.size = uint32(unsafe.Sizeof(attr))
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil
	}
	var fds []int
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		fd, _, errno := syscall.Syscall6(syscall.SYS_PERF_EVENT_OPEN,
			uintptr(unsafe.Pointer(&attr)), uintptr(tid), ^uintptr(0),
			^uintptr(0), 8 /* PERF_FLAG_FD_CLOEXEC */, 0)
		if errno == syscall.ESRCH {
			continue
		}
		if errno != 0 {
			dtlbClose(fds)
			return nil
		}
		fds = append(fds, int(fd))
	}
	return fds
}

// dtlbRead: the counters' sum, or -1.
func dtlbRead(fds []int) int64 {
	if len(fds) == 0 {
		return -1
	}
	var sum int64
	for _, fd := range fds {
		var v uint64
		b := (*[8]byte)(unsafe.Pointer(&v))[:]
		if n, err := syscall.Read(fd, b); err != nil || n != 8 {
			return -1
		}
		sum += int64(v)
	}
	return sum
}

func dtlbClose(fds []int) {
	for _, fd := range fds {
		syscall.Close(fd)
	}
}

// printPerN prints (after - before) / n, or -1 when either is missing.
func printPerN(key string, before, after int64, n int) {
	if before < 0 || after < 0 || n <= 0 {
		fmt.Printf("%s -1\n", key)
	} else {
		fmt.Printf("%s %.2f\n", key, float64(after-before)/float64(n))
	}
}
