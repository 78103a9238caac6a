// SPDX-License-Identifier: MIT

// switch: Go twin of tests/bench/switch.c. Two goroutines on one P call
// runtime.Gosched() N times each; prints ns per switch.
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
	n := 10000000
	if len(os.Args) > 1 {
		n, _ = strconv.Atoi(os.Args[1])
	}
	runtime.GOMAXPROCS(1)
	var wg sync.WaitGroup
	var t0 time.Time
	var once sync.Once
	wg.Add(2)
	for g := 0; g < 2; g++ {
		go func() {
			once.Do(func() { t0 = time.Now() })
			for i := 0; i < n; i++ {
				runtime.Gosched()
			}
			wg.Done()
		}()
	}
	wg.Wait()
	el := time.Since(t0)
	fmt.Printf("switch_ns %.2f\n", float64(el.Nanoseconds())/(2*float64(n)))
}
