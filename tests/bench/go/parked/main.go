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
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

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
