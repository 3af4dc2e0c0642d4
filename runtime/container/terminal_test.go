package container

import (
	"context"
	"os"
	"testing"

	"github.com/ckpt-dev/ckpt/runtime/image"
	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// The masters of a restore: the init's (by its checkpointed pts number,
// else the first) is marked so; all are handed over at once with the
// recorded window size set.
func TestRestoredPtys(t *testing.T) {
	byNumber := func(initSlave string) []string { return []string{initSlave, initSlave, initSlave} }
	pipes := func(string) []string { return []string{"pipe:[1]", "pipe:[2]", "pipe:[3]"} }
	tests := []struct {
		name string
		// descriptors is descriptors.json given the init's slave (the
		// second pty); nil: none.
		descriptors func(initSlave string) []string
		order       []int // indexes of the ptys, in arrival order
		wantInit    int   // index of the master marked the init's
		size        *image.WindowSize
	}{
		{name: "by number, init's second", descriptors: byNumber, order: []int{0, 1}, wantInit: 1, size: &image.WindowSize{Rows: 33, Cols: 111}},
		{name: "by number, init's first", descriptors: byNumber, order: []int{1, 0}, wantInit: 1},
		{name: "no pty in descriptors: the first", descriptors: pipes, order: []int{0, 1}, wantInit: 0},
		{name: "no descriptors: the first", order: []int{1, 0}, wantInit: 1, size: &image.WindowSize{Rows: 20, Cols: 70}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var masters, slaves [2]*os.File
			for i := range masters {
				m, s, err := pty.Open()
				if err != nil {
					t.Fatal(err)
				}
				if err := pty.Setsize(m, &pty.Winsize{Rows: 1, Cols: 1}); err != nil {
					t.Fatal(err)
				}
				masters[i], slaves[i] = m, s
				defer s.Close()
			}
			var desc []string
			if tt.descriptors != nil {
				desc = tt.descriptors(slaves[1].Name())
			}
			p := newRestoredPtys(desc)
			for _, i := range tt.order {
				if err := p.add(masters[i]); err != nil {
					t.Fatalf("add master %d: %v", i, err)
				}
			}
			got := map[*os.File]bool{}
			sizes := map[*os.File]*unix.Winsize{}
			err := p.handOver(context.Background(), tt.size, func(m *os.File, init bool) error {
				got[m] = init
				ws, err := unix.IoctlGetWinsize(int(m.Fd()), unix.TIOCGWINSZ)
				if err != nil {
					return err
				}
				sizes[m] = ws
				return m.Close()
			})
			if err != nil {
				t.Fatal(err)
			}
			for i, m := range masters {
				if init, ok := got[m]; !ok || init != (i == tt.wantInit) {
					t.Errorf("master %d: handed over %v, init %v; want init %v", i, ok, init, i == tt.wantInit)
				}
				ws := sizes[m]
				if ws == nil {
					continue
				}
				want := unix.Winsize{Row: 1, Col: 1}
				if tt.size != nil {
					want = unix.Winsize{Row: tt.size.Rows, Col: tt.size.Cols}
				}
				if ws.Row != want.Row || ws.Col != want.Col {
					t.Errorf("pty %d: window size %dx%d, want %dx%d", i, ws.Row, ws.Col, want.Row, want.Col)
				}
			}
			p.close() // nothing left: a no-op
		})
	}
}

// A master that is not a pty is refused and closed; close drops what was
// never handed over.
func TestRestoredPtysFailures(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	p := newRestoredPtys(nil)
	if err := p.add(r); err == nil {
		t.Fatal("a pipe was taken for a pty master")
	}
	if _, err := r.Stat(); err == nil {
		t.Error("the refused descriptor is still open")
	}
	m, s, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := p.add(m); err != nil {
		t.Fatal(err)
	}
	p.close()
	if _, err := m.Stat(); err == nil {
		t.Error("close left a held master open")
	}
	var nilPtys *restoredPtys
	nilPtys.close() // a restore that failed before reading the image
}
