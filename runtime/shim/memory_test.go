package shim

import (
	"bufio"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestReadOnlySpans(t *testing.T) {
	maps := `00400000-00402000 r--p 00000000 fe:01 1234 /bin/shim
00402000-00b4d000 r-xp 00002000 fe:01 1234 /bin/shim
00b4d000-013d7000 r--p 0074d000 fe:01 1234 /bin/shim
013d8000-01456000 rw-p 00fd7000 fe:01 1234 /bin/shim
01456000-0349b000 rw-p 00000000 00:00 0
7f00000000-7f00001000 r-xp 00000000 fe:01 99 /lib/libc.so.6
7f00002000-7f00003000 r-xp 00000000 fe:02 1234 /other/fs/same-inode
7f00004000-7f00005000 r--s 00000000 fe:01 1234 /bin/shim
7f00006000-7f00007000 r-xp 00000000 fe:01 1234 /bin/shim (deleted)
`
	got, err := readOnlySpans(strings.NewReader(maps), 0xfe, 1, 1234)
	if err != nil {
		t.Fatal(err)
	}
	want := []span{{0x400000, 0x402000}, {0x402000, 0xb4d000}, {0xb4d000, 0x13d7000}, {0x7f00006000, 0x7f00007000}}
	if len(got) != len(want) {
		t.Fatalf("spans %x, want %x", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("spans %x, want %x", got, want)
		}
	}
	if _, err := readOnlySpans(strings.NewReader("zz-yy r--p 0 fe:01 1234 /bin/shim\n"), 0xfe, 1, 1234); err == nil {
		t.Fatal("a bad range was accepted")
	}
}

// trimCode unmaps this test binary's code and read-only data, which the
// test goes on running from.
func TestTrimCode(t *testing.T) {
	before := exeRss(t)
	if err := trimCode(); err != nil {
		t.Fatal(err)
	}
	after := exeRss(t)
	if after >= before || before == 0 {
		t.Fatalf("the binary's resident read-only pages: %d kB before, %d kB after", before, after)
	}
	// Code that runs after the trim is mapped again.
	if s := strconv.Itoa(len(strings.Repeat("x", 3))); s != "3" {
		t.Fatal(s)
	}
	t.Logf("resident read-only pages of the binary: %d kB -> %d kB", before, after)
}

// exeRss sums Rss over this binary's read-only private mappings.
func exeRss(t *testing.T) int {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/exe", &st); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	total, in := 0, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			in = fields[4] == strconv.FormatUint(st.Ino, 10) && fields[1][1] != 'w'
			continue
		}
		if in && len(fields) >= 2 && fields[0] == "Rss:" {
			n, _ := strconv.Atoi(fields[1])
			total += n
		}
	}
	return total
}

func TestIdleTimer(t *testing.T) {
	var runs atomic.Int32
	it := &idleTimer{delay: time.Second, f: func() { runs.Add(1) }}
	waitRuns := func(want int32) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for runs.Load() < want && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := runs.Load(); n != want {
			t.Fatalf("ran %d times, want %d", n, want)
		}
	}
	start := time.Now()
	for range 5 {
		it.reset()
		time.Sleep(20 * time.Millisecond)
	}
	// Resets kept coming for less than the delay: nothing ran yet.
	if n := runs.Load(); n != 0 && time.Since(start) < time.Second {
		t.Fatalf("ran %d times while resets kept coming", n)
	}
	waitRuns(1)
	it.reset()
	waitRuns(2)
}

func TestWithoutSpan(t *testing.T) {
	spans := []span{{0x1000, 0x3000}, {0x4000, 0x6000}, {0x7000, 0x8000}}
	for _, tc := range []struct {
		name string
		cut  span
		want []span
	}{
		{"none", span{}, spans},
		{"middle of one", span{0x5000, 0x5800}, []span{{0x1000, 0x3000}, {0x4000, 0x5000}, {0x5800, 0x6000}, {0x7000, 0x8000}}},
		{"whole one", span{0x4000, 0x6000}, []span{{0x1000, 0x3000}, {0x7000, 0x8000}}},
		{"across two", span{0x2000, 0x5000}, []span{{0x1000, 0x2000}, {0x5000, 0x6000}, {0x7000, 0x8000}}},
		{"everything", span{0, ^uintptr(0)}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := withoutSpan(spans, tc.cut); !slices.Equal(got, tc.want) {
				t.Fatalf("withoutSpan(%v) = %x, want %x", tc.cut, got, tc.want)
			}
		})
	}
}

// The test binary is linked like the shim: its RELRO pages, which the
// loader wrote, are never among those trimCode drops.
func TestRelroPagesOfThisBinary(t *testing.T) {
	r, err := relroPages("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	if r.end < r.start {
		t.Fatalf("bad range %x", r)
	}
}
