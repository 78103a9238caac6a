// SPDX-License-Identifier: MIT

// mpmc: Go twin of tests/bench/mpmc.c. P producers and C consumers share a
// buffered channel of capacity 1024 on GOMAXPROCS 2; M uint64 messages in
// all; prints millions of messages per second for 1x1 and 4x4.
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

func run(m int64, nprod, ncons int) {
	ch := make(chan uint64, 1024)
	per := uint64(m / int64(nprod))
	var producing, consuming sync.WaitGroup
	var total uint64
	consuming.Add(ncons)
	producing.Add(nprod)
	t0 := time.Now()
	for i := 0; i < ncons; i++ {
		go func() {
			var sum uint64
			for v := range ch {
				sum += v
			}
			atomic.AddUint64(&total, sum)
			consuming.Done()
		}()
	}
	for i := 0; i < nprod; i++ {
		go func() {
			for k := uint64(0); k < per; k++ {
				ch <- k
			}
			producing.Done()
		}()
	}
	producing.Wait()
	close(ch)
	consuming.Wait()
	el := time.Since(t0)
	if total != uint64(nprod)*(per*(per-1)/2) {
		fmt.Fprintf(os.Stderr, "mpmc: wrong sum %d\n", total)
		os.Exit(1)
	}
	fmt.Printf("mpmc%dx%d_mmsgs %.2f\n", nprod, ncons,
		float64(per)*float64(nprod)*1e3/float64(el.Nanoseconds()))
}

func main() {
	m := int64(4000000)
	if len(os.Args) > 1 {
		m, _ = strconv.ParseInt(os.Args[1], 10, 64)
	}
	runtime.GOMAXPROCS(2)
	run(m, 1, 1)
	run(m, 4, 4)
}
