package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// output collects what a task prints.
type output struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.Write(p)
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// waitFor waits until the output contains want.
func (o *output) waitFor(ctx context.Context, want string, timeout time.Duration) error {
	if err := waitFor(ctx, timeout, func() bool { return strings.Contains(o.String(), want) }); err != nil {
		return fmt.Errorf("no %q in the output (%q): %w", want, lastBytes(o.String(), 200), err)
	}
	return nil
}

// console is a terminal task's stdio: typed lines in, the pty's output out.
type console struct {
	in  *io.PipeReader
	typ *io.PipeWriter
	out *output
}

func newConsole() *console {
	r, w := io.Pipe()
	return &console{in: r, typ: w, out: &output{}}
}

func (c *console) typeLine(line string) error {
	_, err := io.WriteString(c.typ, line+"\n")
	return err
}

func (c *console) Close() error { return c.typ.Close() }

// ttySetup and ttyProbe are typed into the terminal workload's shell:
// the first leaves state in the shell, the second shows that a restored
// shell still has it. The wanted output differs from the typed text, which
// the terminal echoes.
const (
	ttySetup     = "x=41; echo v-$((x+1))"
	ttySetupWant = "v-42"
	ttyProbe     = "echo w-$((x+2))"
	ttyProbeWant = "w-43"
)

func lastBytes(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
