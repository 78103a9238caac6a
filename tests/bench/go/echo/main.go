// SPDX-License-Identifier: MIT

// echo: Go twin of tests/bench/echo.c. A TCP echo server on 127.0.0.1, one
// goroutine per connection, under the load of echoload (100, 1,000 and
// 10,000 connections of 64-byte round trips, ECHO_SECONDS each, default 3).
// Prints the same figures as the C program.
package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

func status(key string) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), key) {
			v, _ := strconv.ParseInt(strings.Fields(sc.Text()[len(key):])[0], 10, 64)
			return v
		}
	}
	return -1
}

func conn(c net.Conn) {
	buf := make([]byte, 256)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	c.Close()
}

func field(out, key string) float64 {
	i := strings.Index(out, key)
	if i < 0 {
		return -1
	}
	v, _ := strconv.ParseFloat(strings.Fields(out[i+len(key):])[0], 64)
	return v
}

func oneSize(conns, secs int) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "echo:", err)
		os.Exit(1)
	}
	var stop int32
	var peakThreads, peakRSS int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				if atomic.LoadInt32(&stop) != 0 {
					return
				}
				if ne, ok := err.(net.Error); ok && ne.Temporary() {
					time.Sleep(time.Millisecond)
					continue
				}
				return
			}
			go conn(c)
		}
	}()
	go func() {
		for atomic.LoadInt32(&stop) == 0 {
			if t := status("Threads:"); t > atomic.LoadInt64(&peakThreads) {
				atomic.StoreInt64(&peakThreads, t)
			}
			if r := status("VmRSS:"); r > atomic.LoadInt64(&peakRSS) {
				atomic.StoreInt64(&peakRSS, r)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	self, _ := os.Executable()
	load := filepath.Join(filepath.Dir(self), "echoload")
	port := ln.Addr().(*net.TCPAddr).Port
	out, err := exec.Command(load, strconv.Itoa(port), strconv.Itoa(conns), strconv.Itoa(secs)).Output()
	if err != nil {
		fmt.Fprintln(os.Stderr, "echo: echoload:", err)
		os.Exit(1)
	}
	atomic.StoreInt32(&stop, 1)
	ln.Close()
	s := string(out)
	fmt.Printf("echo%d_kreqs %.1f\n", conns, field(s, "requests ")/float64(secs)/1000)
	fmt.Printf("echo%d_p50_us %.0f\n", conns, field(s, "p50_us "))
	fmt.Printf("echo%d_p99_us %.0f\n", conns, field(s, "p99_us "))
	fmt.Printf("echo%d_p999_us %.0f\n", conns, field(s, "p999_us "))
	fmt.Printf("echo%d_threads %d\n", conns, atomic.LoadInt64(&peakThreads))
	fmt.Printf("echo%d_rss_kb %d\n", conns, atomic.LoadInt64(&peakRSS))
	fmt.Printf("echo%d_unanswered %.0f\n", conns, field(s, "unanswered "))
	time.Sleep(200 * time.Millisecond)
}

func main() {
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil {
		rl.Cur = rl.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
	secs := 3
	if v, err := strconv.Atoi(os.Getenv("ECHO_SECONDS")); err == nil && v > 0 {
		secs = v
	}
	oneSize(100, secs)
	oneSize(1000, secs)
	oneSize(10000, secs)
}
