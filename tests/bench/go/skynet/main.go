// SPDX-License-Identifier: MIT

// skynet: Go twin of tests/bench/skynet.c, with the same structure: each
// node spawns 10 children that write into a result slot and signal a
// WaitGroup.
package main

import (
	"fmt"
	"os"
	"sync"
	"time"
)

func skynet(num, size int64, result *int64, done *sync.WaitGroup) {
	if size == 1 {
		*result = num
		done.Done()
		return
	}
	var wg sync.WaitGroup
	var results [10]int64
	wg.Add(10)
	for i := int64(0); i < 10; i++ {
		go skynet(num+i*(size/10), size/10, &results[i], &wg)
	}
	wg.Wait()
	var sum int64
	for _, r := range results {
		sum += r
	}
	*result = sum
	done.Done()
}

func main() {
	var wg sync.WaitGroup
	var result int64
	t0 := time.Now()
	wg.Add(1)
	go skynet(0, 1000000, &result, &wg)
	wg.Wait()
	fmt.Printf("skynet_ms %.1f\n", float64(time.Since(t0).Nanoseconds())/1e6)
	if result != 499999500000 {
		fmt.Fprintf(os.Stderr, "skynet: wrong sum %d\n", result)
		os.Exit(1)
	}
}
