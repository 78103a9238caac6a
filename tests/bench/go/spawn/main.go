// SPDX-License-Identifier: MIT

// spawn: Go twin of tests/bench/spawn.c. Spawns N goroutines that park on
// a WaitGroup gate, releases them, and does it again reusing memory.
package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

func rssKB() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return -1
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		l := s.Text()
		if strings.HasPrefix(l, "VmRSS:") {
			v, _ := strconv.ParseInt(strings.Fields(l)[1], 10, 64)
			return v
		}
	}
	return -1
}

func round(n int, r int) {
	var gate, started, ended sync.WaitGroup
	gate.Add(1)
	started.Add(n)
	ended.Add(n)
	r0 := rssKB()
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
	r1 := rssKB()
	gate.Done()
	ended.Wait()
	t2 := time.Now()
	if r == 1 {
		fmt.Printf("spawn_ns %.1f\n", float64(t1.Sub(t0).Nanoseconds())/float64(n))
		fmt.Printf("rss_bytes %.0f\n", float64(r1-r0)*1024/float64(n))
		fmt.Printf("release_ns %.1f\n", float64(t2.Sub(t1).Nanoseconds())/float64(n))
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
