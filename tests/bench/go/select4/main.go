// SPDX-License-Identifier: MIT

// select4: Go twin of tests/bench/select4.c. One goroutine (GOMAXPROCS 1)
// selects over receives from 4 buffered channels of capacity 4096, kept
// full: batches of 4096 selects are timed, the channels are topped up
// between batches (untimed). Prints ns per select.
package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"time"
)

const batch = 4096

func main() {
	n := int64(5000000)
	if len(os.Args) > 1 {
		n, _ = strconv.ParseInt(os.Args[1], 10, 64)
	}
	runtime.GOMAXPROCS(1)
	var ch [4]chan uint64
	for i := range ch {
		ch[i] = make(chan uint64, batch)
		for k := 0; k < batch; k++ {
			ch[i] <- 1
		}
	}
	var picked [4]int64
	var sum uint64
	var busy time.Duration
	done := int64(0)
	for done < n {
		var taken [4]int
		var v uint64
		t0 := time.Now()
		for k := 0; k < batch; k++ {
			select {
			case v = <-ch[0]:
				taken[0]++
			case v = <-ch[1]:
				taken[1]++
			case v = <-ch[2]:
				taken[2]++
			case v = <-ch[3]:
				taken[3]++
			}
			sum += v
		}
		busy += time.Since(t0)
		done += batch
		for i := range ch {
			picked[i] += int64(taken[i])
			for k := 0; k < taken[i]; k++ {
				ch[i] <- 1
			}
		}
	}
	fmt.Printf("select4_ns %.1f\n", float64(busy.Nanoseconds())/float64(done))
	if sum != uint64(done) {
		fmt.Fprintf(os.Stderr, "select4: received %d values for %d selects\n", sum, done)
		os.Exit(1)
	}
	for i := range picked {
		if picked[i] < done/4*9/10 || picked[i] > done/4*11/10 {
			fmt.Fprintf(os.Stderr, "select4: case %d chosen %d times of %d\n", i, picked[i], done)
			os.Exit(1)
		}
	}
}
