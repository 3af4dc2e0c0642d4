package ctrd

import "testing"

func TestFlagValue(t *testing.T) {
	args := []string{"containerd-shim-runc-v2", "-namespace", "ns", "-id", "c1", "-address", "/run/c.sock"}
	tests := []struct{ name, want string }{{"-id", "c1"}, {"-address", "/run/c.sock"}, {"-debug", ""}}
	for _, tc := range tests {
		if got := flagValue(args, tc.name); got != tc.want {
			t.Errorf("flagValue(%s) = %q, want %q", tc.name, got, tc.want)
		}
	}
}
