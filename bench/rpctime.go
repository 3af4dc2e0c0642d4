package main

import (
	"context"
	"path"
	"sync"
	"time"

	"google.golang.org/grpc"
)

// rpcClock times containerd's task service calls at the client's gRPC
// connection, so that what the runtime took can be told apart from what
// the client does around it (pause, resume, checkpoint image records).
type rpcClock struct {
	mu   sync.Mutex
	last map[string]time.Duration
}

func newRPCClock() *rpcClock { return &rpcClock{last: map[string]time.Duration{}} }

// interceptor records the duration of every Tasks call by method name.
func (c *rpcClock) interceptor(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	t0 := time.Now()
	err := invoker(ctx, method, req, reply, cc, opts...)
	if path.Dir(method) == "/containerd.services.tasks.v1.Tasks" {
		c.mu.Lock()
		c.last[path.Base(method)] = time.Since(t0)
		c.mu.Unlock()
	}
	return err
}

// reset forgets what was recorded; the bench runs one call at a time.
func (c *rpcClock) reset() {
	c.mu.Lock()
	clear(c.last)
	c.mu.Unlock()
}

// get is the last recorded duration of method ("Checkpoint", "Create").
func (c *rpcClock) get(method string) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last[method]
}
