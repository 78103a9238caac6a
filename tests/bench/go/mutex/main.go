// SPDX-License-Identifier: MIT

// mutex: Go twin of tests/bench/mutex.c. 8 goroutines on GOMAXPROCS 2 lock
// a sync.Mutex, increment a shared counter and unlock, N times in all;
// prints wall time per lock/unlock pair.
package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"
)

func main() {
	n := int64(30000000)
	if len(os.Args) > 1 {
		n, _ = strconv.ParseInt(os.Args[1], 10, 64)
	}
	runtime.GOMAXPROCS(2)
	const nco = 8
	per := n / nco
	var mu sync.Mutex
	var counter int64
	var wg sync.WaitGroup
	wg.Add(nco)
	t0 := time.Now()
	for i := 0; i < nco; i++ {
		go func() {
			for k := int64(0); k < per; k++ {
				mu.Lock()
				counter++
				mu.Unlock()
			}
			wg.Done()
		}()
	}
	wg.Wait()
	el := time.Since(t0)
	fmt.Printf("mutex_ns %.1f\n", float64(el.Nanoseconds())/float64(per*nco))
	if counter != per*nco {
		fmt.Fprintf(os.Stderr, "mutex: counter %d, expected %d\n", counter, per*nco)
		os.Exit(1)
	}
}
