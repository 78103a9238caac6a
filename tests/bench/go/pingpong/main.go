// SPDX-License-Identifier: MIT

// pingpong: Go twin of tests/bench/pingpong.c. Two goroutines bounce a
// value over two unbuffered channels, N round trips, with GOMAXPROCS 1 and
// then 2; prints ns per half round trip (one send + its receive).
package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"
)

func run(n int64, procs int) {
	runtime.GOMAXPROCS(procs)
	ping := make(chan int64)
	pong := make(chan int64)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		for v := range ping {
			pong <- v
		}
		wg.Done()
	}()
	t0 := time.Now()
	for i := int64(0); i < n; i++ {
		ping <- i
		if v := <-pong; v != i {
			fmt.Fprintf(os.Stderr, "pingpong: got %d back for %d\n", v, i)
			os.Exit(1)
		}
	}
	el := time.Since(t0)
	close(ping)
	wg.Wait()
	fmt.Printf("pingpong%d_ns %.1f\n", procs, float64(el.Nanoseconds())/(2*float64(n)))
}

func main() {
	n := int64(2000000)
	if len(os.Args) > 1 {
		n, _ = strconv.ParseInt(os.Args[1], 10, 64)
	}
	run(n, 1)
	run(n, 2)
}
