// Command memsum is the migration tests' workload: it fills N MiB with
// data derived from a seed, prints "ready SUM" (SHA-256 of that memory),
// and prints "sum SUM" of the memory as it is now on every SIGUSR1: a
// moved copy that lost or changed a page answers with another sum.
package main

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
)

func main() {
	mib := 64
	if len(os.Args) > 1 {
		v, err := strconv.Atoi(os.Args[1])
		if err != nil || v < 1 {
			fmt.Fprintln(os.Stderr, "usage: memsum MiB")
			os.Exit(2)
		}
		mib = v
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1)
	mem := make([]byte, mib<<20)
	// xorshift: every page different, nothing CRIU could skip as zero.
	x := uint64(0x9e3779b97f4a7c15)
	for i := 0; i+8 <= len(mem); i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(mem[i:], x)
	}
	fmt.Printf("ready %x\n", sha256.Sum256(mem))
	for range sig {
		fmt.Printf("sum %x\n", sha256.Sum256(mem))
	}
}
