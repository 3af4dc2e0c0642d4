package hooks

import (
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestStageMap(t *testing.T) {
	tests := []struct {
		op            Operation
		stage         string
		phases        []Phase
		where         Namespace
		status        specs.ContainerState
		hookFailure   Policy
		scripts       bool
		scriptFailure Policy
	}{
		{Dump, "pre-dump", nil, "", "", "", true, Abort},
		{Dump, "network-lock", nil, "", "", "", true, Abort},
		{Dump, "query-ext-files", nil, "", "", "", false, ""},
		{Dump, "post-dump", nil, "", "", "", true, Abort},
		{Dump, "network-unlock", nil, "", "", "", true, LogOnly},
		{Dump, "status-ready", nil, "", "", "", true, Abort},
		{Dump, "pre-stream", nil, "", "", "", true, Abort},
		{Restore, "pre-restore", nil, "", "", "", true, Abort},
		{Restore, "setup-namespaces", []Phase{Prestart, CreateRuntime}, RuntimeNamespace, specs.StateCreating, Abort, true, Abort},
		{Restore, "post-setup-namespaces", nil, "", "", "", true, Abort},
		{Restore, "orphan-pts-master", nil, "", "", "", false, ""},
		{Restore, "post-restore", []Phase{CreateContainer}, ContainerNamespace, specs.StateCreating, Abort, true, Abort},
		{Restore, "network-unlock", nil, "", "", "", true, LogOnly},
		{Restore, "pre-resume", []Phase{StartContainer}, ContainerNamespace, specs.StateCreated, KillTree, true, LogOnly},
		{Restore, "post-resume", []Phase{Poststart}, RuntimeNamespace, specs.StateRunning, KillTree, true, LogOnly},
		{Restore, TaskDelete, []Phase{Poststop}, RuntimeNamespace, specs.StateStopped, LogOnly, false, ""},
		// Unknown stages: action scripts only, failing like CRIU's CLI.
		{Restore, "post-something-new", nil, "", "", "", true, Abort},
		{Dump, "setup-namespaces", nil, "", "", "", true, Abort},
	}
	for _, tt := range tests {
		t.Run(string(tt.op)+"/"+tt.stage, func(t *testing.T) {
			s := Lookup(tt.op, tt.stage)
			if s.Op != tt.op || s.Stage != tt.stage {
				t.Fatalf("looked up %s/%s", s.Op, s.Stage)
			}
			if !slices.Equal(s.Phases, tt.phases) || s.Where != tt.where || s.Status != tt.status || s.HookFailure != tt.hookFailure {
				t.Errorf("hooks: %v in %q, status %q, on failure %q", s.Phases, s.Where, s.Status, s.HookFailure)
			}
			if s.Scripts != tt.scripts || s.ScriptFailure != tt.scriptFailure {
				t.Errorf("scripts: %v, on failure %q", s.Scripts, s.ScriptFailure)
			}
		})
	}
}

// TestStageMapInvariants: every phase runs at exactly one step, in the
// runtime-spec's order along CRIU's restore order; the only catch-up is
// post-restore's, of setup-namespaces.
func TestStageMapInvariants(t *testing.T) {
	restoreOrder := []string{"pre-restore", "setup-namespaces", "post-setup-namespaces", "post-restore", "network-unlock", "pre-resume", "post-resume", TaskDelete}
	var phases []Phase
	for _, stage := range restoreOrder {
		phases = append(phases, Lookup(Restore, stage).Phases...)
	}
	want := []Phase{Prestart, CreateRuntime, CreateContainer, StartContainer, Poststart, Poststop}
	if !slices.Equal(phases, want) {
		t.Errorf("phases along the restore: %v, want %v", phases, want)
	}
	seen := map[string]bool{}
	for _, s := range Steps {
		key := string(s.Op) + "/" + s.Stage
		if seen[key] {
			t.Errorf("%s twice in the map", key)
		}
		seen[key] = true
		if s.Op == Dump && len(s.Phases) > 0 {
			t.Errorf("dump stage %s runs OCI hooks", s.Stage)
		}
		if len(s.Phases) > 0 && (s.Where == "" || s.Status == "" || s.HookFailure == "") {
			t.Errorf("%s: hooks without a namespace, status or failure policy", key)
		}
		if s.Scripts && s.ScriptFailure == "" {
			t.Errorf("%s: scripts without a failure policy", key)
		}
		if s.CatchUp != "" && (s.Stage != "post-restore" || s.CatchUp != "setup-namespaces") {
			t.Errorf("%s catches up %s", key, s.CatchUp)
		}
	}
}

func TestOperationOf(t *testing.T) {
	for stage, want := range map[string]Operation{
		"pre-dump": Dump, "post-dump": Dump, "network-lock": Dump, "query-ext-files": Dump,
		"pre-restore": Restore, "setup-namespaces": Restore, "post-restore": Restore, "pre-resume": Restore,
		"post-resume": Restore, "network-unlock": Restore, "status-ready": Restore, "unknown": Restore,
	} {
		if got := OperationOf(stage); got != want {
			t.Errorf("%s: %s, want %s", stage, got, want)
		}
	}
}
