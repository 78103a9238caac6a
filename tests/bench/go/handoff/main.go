// SPDX-License-Identifier: MIT

// handoff: Go twin of tests/bench/handoff.c. Latency with GOMAXPROCS 1:
// goroutine A makes a raw read on a pipe through syscall.Syscall (which
// tells Go's scheduler it may block); goroutine B, queued behind A, stamps
// when it runs and writes the byte that ends A's read. Mixed with
// GOMAXPROCS 2: 1000 goroutines each in a 1 ms raw nanosleep + 1000 each
// computing 100 us. Go has one way to see a block (its sysmon), so its
// figures are printed under both the bpf and the sysmon keys.
//
// Sparse, GOMAXPROCS 1: the latency again, but for one block every 20 ms
// (100 blocks, HANDOFF_SPARSE=N), and the process's CPU time over its
// wall time meanwhile (syscall.Getrusage), as the C version. A wakes the
// writer with a raw write on a control pipe, stamps, and reads; the writer
// writes the byte 1 ms later. The C version's writer is a plain pthread; a
// goroutine, even locked to its thread, needs the one P to run between its
// wake-up and its write, so its write would wait for the very handoff
// being measured (and its own blocking calls would hold the P). So the
// writer is this program run again as a child process
// (HANDOFF_SPARSE_WRITER=1): independent of this runtime's P, like a
// pthread, and its CPU time is not the parent's.
package main

import (
	"fmt"
	"os"
	"os/exec"
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

// sparseWriter is the child's whole work: for each byte on fd 3, 1 ms
// later (a raw nanosleep: the runtime's timers are coarser) a byte on fd 4.
func sparseWriter() {
	b := make([]byte, 1)
	for {
		if n, _ := syscall.Read(3, b); n != 1 {
			os.Exit(0)
		}
		ts := syscall.Timespec{Nsec: 1000000}
		syscall.Nanosleep(&ts, nil)
		syscall.Write(4, b)
	}
}

func sparse(blocks int) {
	runtime.GOMAXPROCS(1)
	var ctl, data [2]int
	if err := syscall.Pipe2(ctl[:], syscall.O_CLOEXEC); err != nil {
		panic(err)
	}
	if err := syscall.Pipe2(data[:], syscall.O_CLOEXEC); err != nil {
		panic(err)
	}
	exe, err := os.Executable()
	if err != nil {
		panic(err)
	}
	ctlR := os.NewFile(uintptr(ctl[0]), "ctl")
	dataW := os.NewFile(uintptr(data[1]), "data")
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), "HANDOFF_SPARSE_WRITER=1")
	cmd.ExtraFiles = []*os.File{ctlR, dataW} // fds 3 and 4
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		panic(err)
	}
	ctlR.Close()
	dataW.Close()
	lat := make([]int64, blocks)
	var aStamp, bStamp int64
	epoch := time.Now()
	now := func() int64 { return int64(time.Since(epoch)) }
	buf := make([]byte, 1)
	one := []byte{'x'}
	var ru0, ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	t0 := time.Now()
	for i := 0; i < blocks; i++ {
		// a period of idle before each block, the first too
		time.Sleep(time.Until(t0.Add(time.Duration(i+1) * 20 * time.Millisecond)))
		atomic.StoreInt64(&bStamp, 0)
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			atomic.StoreInt64(&bStamp, now())
			wg.Done()
		}()
		go func() {
			syscall.Write(ctl[1], one)
			atomic.StoreInt64(&aStamp, now())
			syscall.Syscall(syscall.SYS_READ, uintptr(data[0]), uintptr(unsafe.Pointer(&buf[0])), 1)
			wg.Done()
		}()
		wg.Wait()
		lat[i] = atomic.LoadInt64(&bStamp) - atomic.LoadInt64(&aStamp)
	}
	wall := time.Since(t0)
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	syscall.Close(ctl[1]) // the child reads EOF and exits
	cmd.Wait()
	syscall.Close(data[0])
	cpu := ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	fmt.Printf("sparse_p50_us %.1f\n", float64(lat[blocks/2])/1e3)
	fmt.Printf("sparse_p99_us %.1f\n", float64(lat[blocks*99/100])/1e3)
	fmt.Printf("sparse_cpu_pct %.1f\n", 100*float64(cpu)/float64(wall.Nanoseconds()))
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
	if os.Getenv("HANDOFF_SPARSE_WRITER") == "1" {
		sparseWriter()
	}
	trials := 300
	if len(os.Args) > 1 {
		trials, _ = strconv.Atoi(os.Args[1])
	}
	blocks := 100
	if s := os.Getenv("HANDOFF_SPARSE"); s != "" {
		blocks, _ = strconv.Atoi(s)
	}
	if blocks < 2 {
		fmt.Fprintln(os.Stderr, "handoff: need at least 2 sparse blocks")
		os.Exit(2)
	}
	latency(trials)
	sparse(blocks)
	mixed()
}
