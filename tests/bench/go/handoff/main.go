// SPDX-License-Identifier: MIT

// handoff: Go twin of tests/bench/handoff.c. Latency with GOMAXPROCS 1:
// goroutine A makes a raw read on a pipe through syscall.Syscall (which
// tells Go's scheduler it may block); goroutine B, queued behind A, stamps
// when it runs and writes the byte that ends A's read. Mixed with
// GOMAXPROCS 2: 1000 goroutines each in a 1 ms raw nanosleep + 1000 each
// computing 100 us. Go has one way to see a block (its sysmon), so its
// figures are printed under both the bpf and the sysmon keys.
package main

import (
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

func latency(trials int) {
	runtime.GOMAXPROCS(1)
	var p [2]int
	if err := syscall.Pipe(p[:]); err != nil {
		panic(err)
	}
	lat := make([]int64, trials)
	var aStamp, bStamp int64
	var inRead int32
	stop := int32(0)
	epoch := time.Now()
	now := func() int64 { return int64(time.Since(epoch)) }
	// ends a trial nobody handed off, as the C version's watchdog
	go func() {
		runtime.LockOSThread()
		for atomic.LoadInt32(&stop) == 0 {
			t := atomic.LoadInt64(&aStamp)
			ts := syscall.Timespec{Nsec: 1000000}
			syscall.Syscall(syscall.SYS_NANOSLEEP, uintptr(unsafe.Pointer(&ts)), 0, 0)
			if atomic.LoadInt32(&inRead) == 1 && t == atomic.LoadInt64(&aStamp) &&
				now()-t > 100000000 && atomic.LoadInt64(&bStamp) == 0 {
				syscall.Write(p[1], []byte{'x'})
				atomic.StoreInt32(&inRead, 0)
			}
		}
	}()
	buf := make([]byte, 1)
	for i := 0; i < trials; i++ {
		atomic.StoreInt64(&bStamp, 0)
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			atomic.StoreInt64(&bStamp, now())
			syscall.Write(p[1], []byte{'x'})
			wg.Done()
		}()
		go func() {
			atomic.StoreInt64(&aStamp, now())
			atomic.StoreInt32(&inRead, 1)
			syscall.Syscall(syscall.SYS_READ, uintptr(p[0]), uintptr(unsafe.Pointer(&buf[0])), 1)
			atomic.StoreInt32(&inRead, 0)
			wg.Done()
		}()
		wg.Wait()
		lat[i] = atomic.LoadInt64(&bStamp) - atomic.LoadInt64(&aStamp)
	}
	atomic.StoreInt32(&stop, 1)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	for _, pre := range []string{"", "sysmon_"} {
		fmt.Printf("%shandoff_p50_us %.1f\n", pre, float64(lat[trials/2])/1e3)
		fmt.Printf("%shandoff_p99_us %.1f\n", pre, float64(lat[trials*99/100])/1e3)
		fmt.Printf("%shandoff_max_us %.1f\n", pre, float64(lat[trials-1])/1e3)
	}
}

func mixed() {
	runtime.GOMAXPROCS(2)
	var wg sync.WaitGroup
	t0 := time.Now()
	wg.Add(2000)
	for i := 0; i < 1000; i++ {
		go func() {
			ts := syscall.Timespec{Nsec: 1000000}
			syscall.Syscall(syscall.SYS_NANOSLEEP, uintptr(unsafe.Pointer(&ts)), 0, 0)
			wg.Done()
		}()
		go func() {
			s := time.Now()
			for time.Since(s) < 100*time.Microsecond {
			}
			wg.Done()
		}()
	}
	wg.Wait()
	ms := float64(time.Since(t0).Nanoseconds()) / 1e6
	fmt.Printf("mixed_ms %.1f\nmixed_sysmon_ms %.1f\nmixed_sysmon_plain_ms %.1f\n", ms, ms, ms)
}

func main() {
	trials := 300
	if len(os.Args) > 1 {
		trials, _ = strconv.Atoi(os.Args[1])
	}
	latency(trials)
	mixed()
}
