// SPDX-License-Identifier: MIT

// echo_server: the Go twin of examples/echo_server.c. A TCP echo server,
// one goroutine per connection, each read with a 10 s idle deadline.
//
//	echo_server [PORT]          serve 127.0.0.1:PORT (default 7000; 0: any
//	                            free port) until killed
//	echo_server --selftest N    serve a free port, run N clients against it
//	                            (100 round trips each), check, exit
package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

func handle(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 4096)
	for {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := c.Read(buf)
		if err != nil {
			return // EOF, or idle for 10 s
		}
		if _, err := c.Write(buf[:n]); err != nil {
			return
		}
	}
}

func serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			return // closed
		}
		go handle(c)
	}
}

func client(addr string, id int) bool {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	for i := 0; i < 100; i++ {
		out := make([]byte, 32)
		copy(out, fmt.Sprintf("message %d from %d", i, id))
		if _, err := c.Write(out); err != nil {
			return false
		}
		in := make([]byte, len(out))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, in); err != nil || !bytes.Equal(in, out) {
			return false
		}
	}
	return true
}

func main() {
	port, selftest := 7000, 0
	switch {
	case len(os.Args) == 3 && os.Args[1] == "--selftest":
		port = 0
		selftest, _ = strconv.Atoi(os.Args[2])
		if selftest <= 0 {
			selftest = 100
		}
	case len(os.Args) == 2:
		port, _ = strconv.Atoi(os.Args[1])
	case len(os.Args) != 1:
		fmt.Fprintln(os.Stderr, "usage: echo_server [PORT] | --selftest N")
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		fmt.Fprintln(os.Stderr, "echo_server: listen:", err)
		os.Exit(1)
	}
	if selftest == 0 {
		fmt.Printf("echo_server: listening on %s\n", ln.Addr())
		serve(ln) // until killed
		return
	}
	go serve(ln)
	var wg sync.WaitGroup
	var failures int32
	for i := 0; i < selftest; i++ {
		wg.Add(1)
		go func(id int) {
			defer wg.Done()
			if !client(ln.Addr().String(), id) {
				atomic.AddInt32(&failures, 1)
			}
		}(i)
	}
	wg.Wait()
	ln.Close()
	status := "ok"
	if failures > 0 {
		status = "FAILED"
	}
	fmt.Printf("%d clients x 100 round trips: %s\n", selftest, status)
	if failures > 0 {
		os.Exit(1)
	}
}
