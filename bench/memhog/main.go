// Command memhog is a benchmark workload: it holds N MiB of touched,
// non-zero memory (so CRIU must dump every page) and then idles, printing a
// heartbeat counter so a restored copy can be seen running. On SIGUSR1 it
// checks every byte of that memory against what it wrote and prints
// "check ok PAGES" or "check bad page N": a moved copy proves its memory
// arrived whole, not just that it runs.
package main

import (
	"bytes"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

const page = 4096

func main() {
	mib := 64
	if len(os.Args) > 1 {
		v, err := strconv.Atoi(os.Args[1])
		if err != nil || v < 1 {
			fmt.Fprintf(os.Stderr, "usage: memhog MiB\n")
			os.Exit(2)
		}
		mib = v
	}
	mem := make([]byte, mib<<20)
	// Distinct values per page defeat zero-page detection and dedup.
	for i := 0; i < len(mem); i += page {
		mem[i] = byte(i>>12) | 1
	}
	check := make(chan os.Signal, 1)
	signal.Notify(check, syscall.SIGUSR1)
	fmt.Printf("ready %d MiB\n", mib)
	beat := time.NewTicker(200 * time.Millisecond)
	for n := 1; ; {
		select {
		case <-beat.C:
			fmt.Printf("beat %d %d\n", n, mem[(n*page)%len(mem)])
			n++
		case <-check:
			fmt.Println(verify(mem))
		}
	}
}

// verify compares every page with what main wrote: its first byte, then
// zeros (compared with bytes.Equal, which is memcmp-fast, so that 2 GiB
// take well under a second).
func verify(mem []byte) string {
	zero := make([]byte, page-1)
	for i := 0; i < len(mem); i += page {
		if mem[i] != byte(i>>12)|1 || !bytes.Equal(mem[i+1:i+page], zero) {
			return fmt.Sprintf("check bad page %d", i/page)
		}
	}
	return fmt.Sprintf("check ok %d", len(mem)/page)
}
