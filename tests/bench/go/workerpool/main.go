// SPDX-License-Identifier: MIT

// workerpool: Go twin of tests/bench/workerpool.c. 1e5 jobs go to 4
// workers over a jobs channel and come back doubled on a results channel,
// both buffered for all the jobs; 30 rounds, each with new channels and
// workers, all procs. Prints millions of jobs per second.
package main

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
)

const nworkers = 4
const rounds = 30

func round(njobs int64) {
	jobs := make(chan int64, njobs)
	results := make(chan int64, njobs)
	var wg sync.WaitGroup
	wg.Add(nworkers)
	for w := 0; w < nworkers; w++ {
		go func() {
			for j := range jobs {
				results <- j * 2
			}
			wg.Done()
		}()
	}
	for j := int64(1); j <= njobs; j++ {
		jobs <- j
	}
	close(jobs)
	var sum int64
	for j := int64(0); j < njobs; j++ {
		sum += <-results
	}
	wg.Wait()
	if sum != njobs*(njobs+1) {
		fmt.Fprintf(os.Stderr, "workerpool: wrong sum %d\n", sum)
		os.Exit(1)
	}
}

func main() {
	njobs := int64(100000)
	if len(os.Args) > 1 {
		njobs, _ = strconv.ParseInt(os.Args[1], 10, 64)
	}
	t0 := time.Now()
	for i := 0; i < rounds; i++ {
		round(njobs)
	}
	el := time.Since(t0)
	fmt.Printf("workerpool_mjobs %.2f\n", float64(njobs)*rounds*1e3/float64(el.Nanoseconds()))
}
