// SPDX-License-Identifier: MIT

// selectmem: Go twin of tests/bench/selectmem.c (test/chan/select2.go as a
// benchmark). A sender sends on an unbuffered channel while main selects
// {<-c, <-dummy} for each value, GOMAXPROCS 1; after a warm-up round of
// 100,000, ten rounds: RSS growth per 100,000 selects, and ns per select.
package main

import (
	"fmt"
	"runtime"
	"time"
)

const round = 100000
const rounds = 10

func sender(c chan int, n int) {
	for i := 0; i < n; i++ {
		c <- 1
	}
}

func receive(c, dummy chan int, n int) {
	for i := 0; i < n; i++ {
		select {
		case <-c:
		case <-dummy:
			panic("dummy")
		}
	}
}

func main() {
	runtime.GOMAXPROCS(1)
	c := make(chan int)
	dummy := make(chan int)
	go sender(c, round)
	receive(c, dummy, round)
	before := rssKB()
	t0 := time.Now()
	go sender(c, round*rounds)
	receive(c, dummy, round*rounds)
	fmt.Printf("selectmem_ns %.1f\n", float64(time.Since(t0).Nanoseconds())/(round*rounds))
	fmt.Printf("selectmem_rss_bytes %d\n", (rssKB()-before)*1024/rounds)
}
