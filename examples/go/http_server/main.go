// SPDX-License-Identifier: MIT

// http_server: the Go twin of examples/http_server.c. net/http's server:
// keep-alive, a goroutine per connection, a request must arrive within
// 10 s, a connection may stay idle 30 s; "hello from PATH" for every path.
//
//	http_server [PORT]          serve 127.0.0.1:PORT (default 8080; 0: any
//	                            free port) until killed
//	http_server --selftest N    serve a free port, run N keep-alive clients
//	                            (100 requests each), check, exit
package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// One keep-alive client written against the wire, as the C self-test is.
func client(addr string, id int) bool {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	r := bufio.NewReader(c)
	for i := 0; i < 100; i++ {
		closing := ""
		if i == 99 {
			closing = "Connection: close\r\n"
		}
		fmt.Fprintf(c, "GET /c%d/%d HTTP/1.1\r\nHost: x\r\n%s\r\n", id, i, closing)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(r, nil)
		if err != nil || resp.StatusCode != 200 {
			return false
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(body) != fmt.Sprintf("hello from /c%d/%d\n", id, i) {
			return false
		}
	}
	return true
}

func main() {
	port, selftest := 8080, 0
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
		fmt.Fprintln(os.Stderr, "usage: http_server [PORT] | --selftest N")
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		fmt.Fprintln(os.Stderr, "http_server: listen:", err)
		os.Exit(1)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello from %s\n", r.URL.Path)
		}),
		ReadTimeout: 10 * time.Second,
		IdleTimeout: 30 * time.Second,
	}
	if selftest == 0 {
		fmt.Printf("http_server: listening on http://%s/\n", ln.Addr())
		srv.Serve(ln)
		return
	}
	go srv.Serve(ln)
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
	srv.Close()
	status := "ok"
	if failures > 0 {
		status = "FAILED"
	}
	fmt.Printf("%d keep-alive clients x 100 requests: %s\n", selftest, status)
	if failures > 0 {
		os.Exit(1)
	}
}
