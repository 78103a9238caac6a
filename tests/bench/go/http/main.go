// SPDX-License-Identifier: MIT

// http: Go twin of tests/bench/echo.c built with -DBENCH_HTTP. net/http's
// server on 127.0.0.1 answering "hello, world\n", under the load of
// echoload --http (1,000 keep-alive connections, ECHO_SECONDS, default 3).
// Prints the same figures as the C program.
package main

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
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
		fmt.Fprintln(os.Stderr, "http:", err)
		os.Exit(1)
	}
	var stop int32
	var peakThreads, peakRSS int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte("hello, world\n"))
	})}
	go srv.Serve(ln)
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
	out, err := exec.Command(load, "--http", strconv.Itoa(port), strconv.Itoa(conns), strconv.Itoa(secs)).Output()
	if err != nil {
		fmt.Fprintln(os.Stderr, "http: echoload:", err)
		os.Exit(1)
	}
	atomic.StoreInt32(&stop, 1)
	srv.Close()
	s := string(out)
	fmt.Printf("http%d_kreqs %.1f\n", conns, field(s, "requests ")/float64(secs)/1000)
	fmt.Printf("http%d_p50_us %.0f\n", conns, field(s, "p50_us "))
	fmt.Printf("http%d_p99_us %.0f\n", conns, field(s, "p99_us "))
	fmt.Printf("http%d_p999_us %.0f\n", conns, field(s, "p999_us "))
	fmt.Printf("http%d_threads %d\n", conns, atomic.LoadInt64(&peakThreads))
	fmt.Printf("http%d_rss_kb %d\n", conns, atomic.LoadInt64(&peakRSS))
	fmt.Printf("http%d_unanswered %.0f\n", conns, field(s, "unanswered "))
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
	oneSize(1000, secs)
}
