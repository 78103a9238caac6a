// SPDX-License-Identifier: MIT

// slice: Go twin of tests/bench/slice.c. Goroutines that compute for 2 s
// of CPU (a loop calibrated at start) beside one that sleeps 10 ms at a
// time; Go preempts the spinners
// (asynchronously, since Go 1.14). Prints the ticker's largest gap and
// ticks while they run, how long they took, and the peak thread count,
// for GOMAXPROCS=1 with 1 spinner (twice: beside kgreen's default backend
// and beside its sysmon) and GOMAXPROCS=2 with 3.
package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func threads() int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "Threads:") {
			n, _ := strconv.Atoi(strings.TrimSpace(l[len("Threads:"):]))
			return n
		}
	}
	return -1
}

var sink uint64

// work: n rounds of xorshift.
func work(n uint64) uint64 {
	x := uint64(88172645463325252)
	for ; n > 0; n-- {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
	}
	return x
}

// calibrate: rounds of work that take d on one CPU here.
func calibrate(d time.Duration) uint64 {
	for n := uint64(1 << 20); ; n *= 2 {
		t0 := time.Now()
		atomic.AddUint64(&sink, work(n))
		if t := time.Since(t0); t >= 100*time.Millisecond {
			return uint64(float64(n) * float64(d) / float64(t))
		}
	}
}

func run(prefix string, procs, hogs int, iters uint64) {
	runtime.GOMAXPROCS(procs)
	var done int32
	var t0, tDone time.Time
	var maxGap time.Duration
	ticks, peak := 0, 0
	var tick sync.WaitGroup
	tick.Add(1)
	go func() {
		defer tick.Done()
		last := time.Now()
		for atomic.LoadInt32(&done) == 0 {
			time.Sleep(10 * time.Millisecond)
			now := time.Now()
			if now.After(t0) && (atomic.LoadInt32(&done) == 0 || last.Before(tDone)) {
				if now.Sub(last) > maxGap {
					maxGap = now.Sub(last)
				}
				ticks++
			}
			if th := threads(); th > peak {
				peak = th
			}
			last = now
		}
	}()
	time.Sleep(30 * time.Millisecond)
	t0 = time.Now()
	var wg sync.WaitGroup
	wg.Add(hogs)
	for i := 0; i < hogs; i++ {
		go func() {
			defer wg.Done()
			atomic.AddUint64(&sink, work(iters))
		}()
	}
	wg.Wait()
	tDone = time.Now()
	atomic.StoreInt32(&done, 1)
	tick.Wait()
	fmt.Printf("%s_gap_ms %.1f\n", prefix, float64(maxGap)/1e6)
	fmt.Printf("%s_ticks %d\n", prefix, ticks)
	fmt.Printf("%s_hogs_ms %.0f\n", prefix, float64(tDone.Sub(t0))/1e6)
	fmt.Printf("%s_threads %d\n", prefix, peak)
}

func main() {
	ms := 2000
	if len(os.Args) > 1 {
		ms, _ = strconv.Atoi(os.Args[1])
	}
	iters := calibrate(time.Duration(ms) * time.Millisecond)
	run("slice1", 1, 1, iters)
	run("slice1sysmon", 1, 1, iters)
	run("slice3", 2, 3, iters)
}
