package console

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func mkfifo(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "stdout")
	if err := unix.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// openReader opens a FIFO's read end as containerd's client does: without
// waiting for a writer.
func openReader(t *testing.T, path string) *os.File {
	t.Helper()
	r, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// readFor reads r for d and returns what came.
func readFor(r *os.File, d time.Duration) []byte {
	r.SetReadDeadline(time.Now().Add(d))
	var out bytes.Buffer
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		out.Write(buf[:n])
		if err != nil {
			return out.Bytes()
		}
	}
}

// writeWithin writes b to w and fails the test if that takes longer than d.
func writeWithin(t *testing.T, w io.Writer, b []byte, d time.Duration) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		n, err := w.Write(b)
		if err == nil && n != len(b) {
			err = io.ErrShortWrite
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("write: %v", err)
		}
	case <-time.After(d):
		t.Fatalf("a write of %d bytes blocked for %s", len(b), d)
	}
}

// A FIFO's reader may be there, go away and come back: output never
// blocks without a reader and reaches the reader that is there.
func TestFIFOOutputReaderComesAndGoes(t *testing.T) {
	path := mkfifo(t)
	out := newFIFOOutput(context.Background(), path, 0)
	defer out.Close()

	// No reader has ever been there: dropped, not blocked.
	writeWithin(t, out, []byte("nobody\n"), 2*time.Second)

	r := openReader(t, path)
	writeWithin(t, out, []byte("first\n"), 2*time.Second)
	if got := readFor(r, 200*time.Millisecond); string(got) != "first\n" {
		t.Fatalf("the reader got %q, want %q", got, "first\n")
	}

	// The reader goes away: far more than a pipe holds goes through at once.
	r.Close()
	big := bytes.Repeat([]byte("x"), 1<<20)
	for i := 0; i < 4; i++ {
		writeWithin(t, out, big, 2*time.Second)
	}

	// It comes back: later output reaches it.
	r = openReader(t, path)
	defer r.Close()
	writeWithin(t, out, []byte("again\n"), 2*time.Second)
	if got := readFor(r, 200*time.Millisecond); string(got) != "again\n" {
		t.Fatalf("the returning reader got %q, want %q", got, "again\n")
	}
}

// A reader that stops reading holds the writer back (flow control), and
// closing its end releases it.
func TestFIFOOutputWaitsForSlowReaderUntilItLeaves(t *testing.T) {
	path := mkfifo(t)
	out := newFIFOOutput(context.Background(), path, 0)
	defer out.Close()
	r := openReader(t, path)

	done := make(chan error, 1)
	go func() {
		_, err := out.Write(bytes.Repeat([]byte("y"), 1<<20))
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("a megabyte went into a FIFO nobody reads (err %v)", err)
	case <-time.After(300 * time.Millisecond):
	}
	r.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("write after the reader left: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the write stayed blocked after the reader left")
	}
}

// Output written before containerd's client has entered its blocking open
// waits for it instead of being dropped.
func TestFIFOOutputWaitsForFirstReader(t *testing.T) {
	path := mkfifo(t)
	out := newFIFOOutput(context.Background(), path, 5*time.Second)
	defer out.Close()
	got := make(chan []byte, 1)
	go func() {
		time.Sleep(200 * time.Millisecond)
		r, err := os.OpenFile(path, os.O_RDONLY, 0) // blocks until a writer opens
		if err != nil {
			got <- nil
			return
		}
		defer r.Close()
		b, _ := io.ReadAll(r)
		got <- b
	}()
	if _, err := out.Write([]byte("early\n")); err != nil {
		t.Fatal(err)
	}
	out.Close()
	if b := <-got; string(b) != "early\n" {
		t.Fatalf("the first reader got %q, want %q", b, "early\n")
	}
}

// A reader waiting in open(2) (containerd's client) when there was never
// any output sees EOF at Close, as it would with the write end held open.
func TestFIFOOutputCloseLetsWaitingReaderIn(t *testing.T) {
	path := mkfifo(t)
	out := newFIFOOutput(context.Background(), path, 0)
	got := make(chan error, 1)
	go func() {
		r, err := os.OpenFile(path, os.O_RDONLY, 0) // blocks until a writer opens
		if err != nil {
			got <- err
			return
		}
		defer r.Close()
		_, err = r.Read(make([]byte, 16))
		got <- err
	}()
	time.Sleep(200 * time.Millisecond)
	out.Close()
	select {
	case err := <-got:
		if err != io.EOF {
			t.Fatalf("the waiting reader read %v, want EOF", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the reader waiting in open(2) was never let in")
	}
}

// Close ends a write that waits for room, and later writes fail.
func TestFIFOOutputCloseEndsWrite(t *testing.T) {
	path := mkfifo(t)
	out := newFIFOOutput(context.Background(), path, 0)
	r := openReader(t, path)
	defer r.Close()
	done := make(chan error, 1)
	go func() {
		_, err := out.Write(bytes.Repeat([]byte("z"), 1<<20))
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	out.Close()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrClosed) {
			t.Fatalf("write ended by Close: %v, want os.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end a blocked write")
	}
	if _, err := out.Write([]byte("late")); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("write after Close: %v", err)
	}
}

// Paths that are not FIFOs are files, created and appended to.
func TestOpenOutputFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "logs", "out.log")
	for _, line := range []string{"one\n", "two\n"} {
		w, err := OpenOutput(context.Background(), path)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(line))
		w.Close()
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "one\ntwo\n" {
		t.Fatalf("file holds %q, %v", b, err)
	}
}
