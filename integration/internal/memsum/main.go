// Command memsum is a test workload: it fills N MiB of its memory with a
// known pseudo-random pattern (no zero pages, nothing CRIU could skip),
// prints the memory's SHA-256 as "sum 1 HEX", then beats ("beat N") every
// 100 ms and prints the sum again ("sum K HEX") at each SIGUSR1, so that a
// restored copy shows, from inside the container, whether every page came
// back.
package main

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

func main() {
	mib := 256
	if len(os.Args) > 1 {
		v, err := strconv.Atoi(os.Args[1])
		if err != nil || v < 1 {
			fmt.Fprintln(os.Stderr, "usage: memsum MiB")
			os.Exit(2)
		}
		mib = v
	}
	mem := make([]byte, mib<<20)
	x := uint64(0x9e3779b97f4a7c15)
	for i := 0; i+8 <= len(mem); i += 8 {
		// xorshift64: never zero.
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(mem[i:], x)
	}
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	n := 1
	fmt.Printf("sum %d %x\n", n, sha256.Sum256(mem))
	tick := time.NewTicker(100 * time.Millisecond)
	for beat := 1; ; {
		select {
		case <-tick.C:
			fmt.Printf("beat %d\n", beat)
			beat++
		case <-usr1:
			n++
			fmt.Printf("sum %d %x\n", n, sha256.Sum256(mem))
		}
	}
}
