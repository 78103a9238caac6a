// SPDX-License-Identifier: MIT

// coldspawn: Go twin of tests/bench/coldspawn.c. In a fresh process, main
// takes a timestamp, spawns 10,000 goroutines that each do a WaitGroup
// Done, and waits for them, GOMAXPROCS 2. The clock starts in main, after
// the runtime's start-up, as the C version's starts after kg_run's.
// Prints cold10k_us and cold10k_minflt (minor page faults meanwhile,
// syscall.Getrusage).
package main

import (
	"fmt"
	"runtime"
	"sync"
	"syscall"
	"time"
)

const coldN = 10000

// The process's minor page faults so far, or -1.
func minflt() int64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return -1
	}
	return ru.Minflt
}

func main() {
	runtime.GOMAXPROCS(2)
	var wg sync.WaitGroup
	f0 := minflt()
	t0 := time.Now()
	wg.Add(coldN)
	for i := 0; i < coldN; i++ {
		go func() {
			wg.Done()
		}()
	}
	wg.Wait()
	t1 := time.Now()
	f1 := minflt()
	fmt.Printf("cold10k_us %.1f\n", float64(t1.Sub(t0).Nanoseconds())/1e3)
	if f0 < 0 || f1 < 0 {
		fmt.Println("cold10k_minflt -1")
	} else {
		fmt.Printf("cold10k_minflt %d\n", f1-f0)
	}
}
