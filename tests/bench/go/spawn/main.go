// SPDX-License-Identifier: MIT

// spawn: Go twin of tests/bench/spawn.c. Spawns N goroutines that park on
// a WaitGroup gate, releases them, and does it again reusing memory. For
// round 1's spawn also minor page faults (syscall.Getrusage) and dTLB load
// misses in user space (perf_event_open through syscall.Syscall6 on every
// thread, inherited by threads created later; -1 without hardware
// counters) per goroutine.
package main

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
)

func round(n int, r int) {
	var gate, started, ended sync.WaitGroup
	gate.Add(1)
	started.Add(n)
	ended.Add(n)
	var d []int
	d0 := int64(-1)
	if r == 1 {
		d = dtlbOpen()
		d0 = dtlbRead(d)
	}
	r0 := rssKB()
	f0 := minflt()
	t0 := time.Now()
	for i := 0; i < n; i++ {
		go func() {
			started.Done()
			gate.Wait()
			ended.Done()
		}()
	}
	started.Wait()
	t1 := time.Now()
	f1 := minflt()
	d1 := dtlbRead(d)
	dtlbClose(d)
	r1 := rssKB()
	gate.Done()
	ended.Wait()
	t2 := time.Now()
	if r == 1 {
		fmt.Printf("spawn_ns %.1f\n", float64(t1.Sub(t0).Nanoseconds())/float64(n))
		fmt.Printf("rss_bytes %.0f\n", float64(r1-r0)*1024/float64(n))
		fmt.Printf("release_ns %.1f\n", float64(t2.Sub(t1).Nanoseconds())/float64(n))
		printPerN("spawn_minflt", f0, f1, n)
		printPerN("spawn_dtlb", d0, d1, n)
	} else {
		fmt.Printf("spawn2_ns %.1f\n", float64(t1.Sub(t0).Nanoseconds())/float64(n))
		fmt.Printf("release2_ns %.1f\n", float64(t2.Sub(t1).Nanoseconds())/float64(n))
	}
}

func main() {
	n := 1000000
	if len(os.Args) > 1 {
		n, _ = strconv.Atoi(os.Args[1])
	}
	round(n, 1)
	round(n, 2)
}
