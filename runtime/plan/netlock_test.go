package plan

import (
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"github.com/ckpt-dev/ckpt/runtime/image"
)

func TestNetworkLock(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts image.Options
		caps Caps
		skip bool
	}{
		{"loopback only", image.Options{LoopbackOnly: true, EmptyNetNS: true}, Caps{NetworkLockSkip: true}, true},
		{"CRIU without skip", image.Options{LoopbackOnly: true, EmptyNetNS: true}, Caps{}, false},
		{"namespace with contents", image.Options{}, Caps{NetworkLockSkip: true}, false},
		{"empty by request (Docker wires it)", image.Options{EmptyNetNS: true}, Caps{NetworkLockSkip: true}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := networkLock(tc.opts, tc.caps)
			if skip := got != nil && *got == rpc.CriuNetworkLockMethod_SKIP; skip != tc.skip {
				t.Fatalf("network lock %v, want skip=%v", got, tc.skip)
			}
		})
	}
}
