// SPDX-License-Identifier: MIT

// echo: Go twin of tests/bench/echo.c. A TCP echo server on 127.0.0.1, one
// goroutine per connection, under the load of echoload (100, 1,000 and
// 10,000 connections of 64-byte round trips, ECHO_SECONDS each, default 3).
// Prints the same figures as the C program. Built as go-http it is the
// twin of the http benchmark (echo.c with -DBENCH_HTTP): net/http's server
// answering "hello, world\n" under echoload --http at 1,000 connections.
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

func accept(ln net.Listener, stop *int32) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if atomic.LoadInt32(stop) != 0 {
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
}

func field(out, key string) float64 {
	i := strings.Index(out, key)
	if i < 0 {
		return -1
	}
	v, _ := strconv.ParseFloat(strings.Fields(out[i+len(key):])[0], 64)
	return v
}

var httpMode = filepath.Base(os.Args[0]) == "go-http"

// The figures' prefix: the benchmark this binary is the twin of (go-echo,
// go-echoplain: the same server; go-http).
var benchName = strings.TrimPrefix(filepath.Base(os.Args[0]), "go-")

func oneSize(conns, secs int) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "echo:", err)
		os.Exit(1)
	}
	var stop int32
	var peakThreads, peakRSS int64
	name := benchName
	loadArgs := []string{}
	if httpMode {
		name = "http"
		loadArgs = append(loadArgs, "--http")
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Write([]byte("hello, world\n"))
		})}
		go srv.Serve(ln)
	} else {
		go accept(ln, &stop)
	}
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
	loadArgs = append(loadArgs, strconv.Itoa(port), strconv.Itoa(conns), strconv.Itoa(secs))
	out, err := exec.Command(load, loadArgs...).Output()
	if err != nil {
		fmt.Fprintln(os.Stderr, "echo: echoload:", err)
		os.Exit(1)
	}
	atomic.StoreInt32(&stop, 1)
	ln.Close()
	s := string(out)
	fmt.Printf(name+"%d_kreqs %.1f\n", conns, field(s, "requests ")/float64(secs)/1000)
	fmt.Printf(name+"%d_p50_us %.0f\n", conns, field(s, "p50_us "))
	fmt.Printf(name+"%d_p99_us %.0f\n", conns, field(s, "p99_us "))
	fmt.Printf(name+"%d_p999_us %.0f\n", conns, field(s, "p999_us "))
	fmt.Printf(name+"%d_threads %d\n", conns, atomic.LoadInt64(&peakThreads))
	fmt.Printf(name+"%d_rss_kb %d\n", conns, atomic.LoadInt64(&peakRSS))
	fmt.Printf(name+"%d_unanswered %.0f\n", conns, field(s, "unanswered "))
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
	if httpMode {
		oneSize(1000, secs)
		return
	}
	oneSize(100, secs)
	oneSize(1000, secs)
	oneSize(10000, secs)
}
