// Command memhog is a benchmark workload: it holds N MiB of touched,
// non-zero memory (so CRIU must dump every page) and then idles, printing a
// heartbeat counter so a restored copy can be seen running.
package main

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

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
	for i := 0; i < len(mem); i += 4096 {
		mem[i] = byte(i>>12) | 1
	}
	fmt.Printf("ready %d MiB\n", mib)
	for n := 1; ; n++ {
		time.Sleep(200 * time.Millisecond)
		fmt.Printf("beat %d %d\n", n, mem[(n*4096)%len(mem)])
	}
}
