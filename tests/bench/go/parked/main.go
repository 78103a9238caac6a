// SPDX-License-Identifier: MIT

// parked: Go twin of tests/bench/parked.c. N goroutines (default 1e6;
// BENCH_N, or os.Args[1]) each block receiving from one shared unbuffered
// channel, GOMAXPROCS 2; each increments an atomic counter just before its
// receive, main polls it with runtime.Gosched until it reaches N (the
// clock stops there) and sleeps 10 ms so the last few are parked too; then
// close(ch) and a WaitGroup for all N receivers. Per goroutine: spawn-and-
// park ns, RSS growth, close-to-all-returned ns, minor page faults
// (syscall.Getrusage) and dTLB load misses in user space (perf_event_open
// through syscall.Syscall6 on every thread; -1 without hardware counters)
// during the spawn-and-park.
package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
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

func main() {
	n := 1000000
	if s := os.Getenv("BENCH_N"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	if len(os.Args) > 1 {
		n, _ = strconv.Atoi(os.Args[1])
	}
	if n < 1 {
		fmt.Fprintln(os.Stderr, "parked: need at least 1 goroutine")
		os.Exit(2)
	}
	runtime.GOMAXPROCS(2)
	ch := make(chan int)
	var done sync.WaitGroup
	var arrived int64
	done.Add(n)
	d := dtlbOpen()
	d0 := dtlbRead(d)
	r0 := rssKB()
	f0 := minflt()
	t0 := time.Now()
	for i := 0; i < n; i++ {
		go func() {
			atomic.AddInt64(&arrived, 1)
			<-ch
			done.Done()
		}()
	}
	for atomic.LoadInt64(&arrived) < int64(n) {
		runtime.Gosched()
	}
	t1 := time.Now()
	time.Sleep(10 * time.Millisecond)
	f1 := minflt()
	d1 := dtlbRead(d)
	dtlbClose(d)
	r1 := rssKB()
	t2 := time.Now()
	close(ch)
	done.Wait()
	t3 := time.Now()
	fmt.Printf("parked_spawn_ns %.1f\n", float64(t1.Sub(t0).Nanoseconds())/float64(n))
	fmt.Printf("parked_rss_bytes %.0f\n", float64(r1-r0)*1024/float64(n))
	fmt.Printf("parked_close_ns %.1f\n", float64(t3.Sub(t2).Nanoseconds())/float64(n))
	printPerN("parked_minflt", f0, f1, n)
	printPerN("parked_dtlb", d0, d1, n)
}
