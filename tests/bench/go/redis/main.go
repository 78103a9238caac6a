// SPDX-License-Identifier: MIT

// redis: Go twin of tests/bench/redis.c. Starts redis-server on 127.0.0.1,
// then 1,000 goroutines each connect and make REDIS_ROUNDS (default 200)
// INCR round trips with a minimal RESP client on net.Conn (the standard
// library only: no network to fetch a client module). Prints the same
// figures as the C program.
package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const clients = 1000

func status(key string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, key) {
			v, _ := strconv.ParseInt(strings.Fields(l[len(key):])[0], 10, 64)
			return v
		}
	}
	return -1
}

func freePort() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return -1
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func main() {
	rounds := 200
	if v, err := strconv.Atoi(os.Getenv("REDIS_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil {
		rl.Cur = rl.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
	port := freePort()
	addr := "127.0.0.1:" + strconv.Itoa(port)
	srv := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--maxclients", "10000", "--protected-mode", "no")
	if err := srv.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "redis: cannot start redis-server:", err)
		os.Exit(1)
	}
	defer func() { srv.Process.Signal(syscall.SIGTERM); srv.Wait() }()
	for i := 0; i < 500; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		time.Sleep(10 * time.Millisecond)
	}

	lat := make([]uint32, clients*rounds)
	var answered, peak int64
	var running int32 = clients
	go func() {
		for atomic.LoadInt32(&running) > 0 {
			if t := status("Threads:"); t > atomic.LoadInt64(&peak) {
				atomic.StoreInt64(&peak, t)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	cmd := []byte("*2\r\n$4\r\nINCR\r\n$12\r\nkgreen:bench\r\n")
	var wg sync.WaitGroup
	t0 := time.Now()
	for id := 0; id < clients; id++ {
		wg.Add(1)
		go func(id int) {
			defer wg.Done()
			defer atomic.AddInt32(&running, -1)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				return
			}
			defer c.Close()
			r := bufio.NewReader(c)
			for i := 0; i < rounds; i++ {
				s := time.Now()
				if _, err := c.Write(cmd); err != nil {
					return
				}
				line, err := r.ReadString('\n')
				if err != nil || len(line) == 0 || line[0] != ':' {
					return
				}
				lat[id*rounds+i] = uint32(time.Since(s).Microseconds())
				atomic.AddInt64(&answered, 1)
			}
		}(id)
	}
	wg.Wait()
	el := time.Since(t0)
	n := int(answered)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	l := lat[clients*rounds-n:]
	p := func(q int) uint32 {
		if n == 0 {
			return 0
		}
		return l[n*q/100]
	}
	fmt.Printf("redis1000_kreqs %.1f\n", float64(n)/el.Seconds()/1000)
	fmt.Printf("redis1000_p50_us %d\n", p(50))
	fmt.Printf("redis1000_p99_us %d\n", p(99))
	fmt.Printf("redis1000_threads %d\n", atomic.LoadInt64(&peak))
	fmt.Printf("redis1000_unanswered %d\n", clients*rounds-n)
}
