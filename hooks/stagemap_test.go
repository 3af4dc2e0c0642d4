package hooks

import (
	"slices"
	"testing"

	"github.com/ckpt-dev/ckpt/runtime/criu"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestStageMap(t *testing.T) {
	tests := []struct {
		op            Operation
		stage         criu.Stage
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
		t.Run(string(tt.op)+"/"+string(tt.stage), func(t *testing.T) {
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
	restoreOrder := []criu.Stage{"pre-restore", "setup-namespaces", "post-setup-namespaces", "post-restore", "network-unlock", "pre-resume", "post-resume", TaskDelete}
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
		key := string(s.Op) + "/" + string(s.Stage)
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
	for stage, want := range map[criu.Stage]Operation{
		"pre-dump": Dump, "post-dump": Dump, "network-lock": Dump, "query-ext-files": Dump,
		"pre-restore": Restore, "setup-namespaces": Restore, "post-restore": Restore, "pre-resume": Restore,
		"post-resume": Restore, "network-unlock": Restore, "status-ready": Restore, "unknown": Restore,
	} {
		if got := OperationOf(stage); got != want {
			t.Errorf("%s: %s, want %s", stage, got, want)
		}
	}
}

// notSent are the CRIU stages deliberately left out of the map for an
// operation: CRIU never sends them there (criu/action-scripts.c and its
// callers). A stage CRIU gains (a new criu.Stage constant) must go either
// into Steps or here, with a reason, or this test fails.
var notSent = map[Operation]map[criu.Stage]string{
	Dump: {
		criu.PreRestore:          "restore only",
		criu.SetupNamespaces:     "restore only",
		criu.PostSetupNamespaces: "restore only",
		criu.OrphanPtsMaster:     "restore only",
		criu.PostRestore:         "restore only",
		criu.PreResume:           "restore only",
		criu.PostResume:          "restore only",
	},
	Restore: {
		criu.PreDump:       "dump only",
		criu.PostDump:      "dump only",
		criu.NetworkLock:   "dump only: a restore starts with the network locked",
		criu.QueryExtFiles: "dump only: a restore is told its externals in the request",
	},
}

// TestEveryCRIUStageIsMapped: for each operation, every stage CRIU sends
// has a step or is listed in notSent, and every step's stage is one of
// CRIU's (or TaskDelete): a misspelt stage cannot hide as "action scripts
// only".
func TestEveryCRIUStageIsMapped(t *testing.T) {
	known := map[criu.Stage]bool{}
	for _, s := range criu.Stages {
		known[s] = true
	}
	if known[TaskDelete] {
		t.Fatalf("%s is a CRIU stage name too", TaskDelete)
	}
	for _, op := range []Operation{Dump, Restore} {
		for _, stage := range criu.Stages {
			_, left := notSent[op][stage]
			switch mapped := knownIn(op, stage); {
			case mapped && left:
				t.Errorf("%s/%s is both in the map and left out", op, stage)
			case !mapped && !left:
				t.Errorf("%s/%s is neither in the map nor deliberately left out (notSent)", op, stage)
			}
		}
		for stage := range notSent[op] {
			if !known[stage] {
				t.Errorf("notSent[%s] names %q, not a CRIU stage", op, stage)
			}
		}
	}
	for _, s := range Steps {
		if !known[s.Stage] && s.Stage != TaskDelete {
			t.Errorf("step %s/%q: not a CRIU stage", s.Op, s.Stage)
		}
		if s.CatchUp != "" && !known[s.CatchUp] {
			t.Errorf("step %s/%s catches up %q, not a CRIU stage", s.Op, s.Stage, s.CatchUp)
		}
	}
}
