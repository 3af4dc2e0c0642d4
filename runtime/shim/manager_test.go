package shim

import (
	"slices"
	"testing"
)

func TestWithoutEnv(t *testing.T) {
	tests := []struct {
		env, want []string
	}{
		{env: nil, want: []string{}},
		{env: []string{"PATH=/bin", warmEnv + "=1", "HOME=/root"}, want: []string{"PATH=/bin", "HOME=/root"}},
		// Only the variable itself, not one that starts with its name.
		{env: []string{warmEnv + "_OTHER=1", warmEnv + "="}, want: []string{warmEnv + "_OTHER=1"}},
	}
	for _, tt := range tests {
		in := slices.Clone(tt.env)
		if got := withoutEnv(in, warmEnv); !slices.Equal(got, tt.want) {
			t.Errorf("withoutEnv(%q) = %q, want %q", tt.env, got, tt.want)
		}
		if !slices.Equal(in, tt.env) {
			t.Errorf("withoutEnv changed its input: %q", in)
		}
	}
}
