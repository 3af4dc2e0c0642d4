package hooks

import (
	"github.com/ckpt-dev/ckpt/runtime/criu"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// The map: what ckpt does at each CRIU stage. This table is the only place
// that says it; docs/internals.md's "Hooks and action scripts" and DESIGN.md's
// "Hook map" describe it.
//
// Why each OCI phase sits where it sits (CRIU's restore order:
// pre-restore, setup-namespaces, post-setup-namespaces, post-restore,
// network-unlock, pre-resume, post-resume):
//
//   - prestart, createRuntime at setup-namespaces: the restored root task
//     and its namespaces exist, nothing runs. It is where runc runs them
//     and where network hooks need them (the network namespace is there,
//     empty). The mount tree is not restored yet.
//   - createContainer at post-restore: the whole tree and its mounts are
//     restored, every task is stopped. No CRIU stage has the final mount
//     tree before pivot_root (CRIU issue 3030), so a hook that needs the
//     container's mounts gets them here, after pivot_root.
//   - startContainer at pre-resume: the last moment before the restored
//     program runs again. CRIU only logs a false answer here and resumes
//     the tree, so ckpt kills the tree itself.
//   - poststart at post-resume: the program runs. A failure stops the
//     container (runtime-spec): CRIU ignores the answer, ckpt kills.
//   - poststop when the restored container is deleted. After a successful
//     restore runc owns the container and its `runc delete` runs poststop
//     from the state.json ckpt wrote; when the restore itself fails after
//     the create hooks began, ckpt runs it while cleaning up. Either way
//     once.
//
// Action scripts run where CRIU's CLI runs `--action-script` scripts: at
// every stage except orphan-pts-master and query-ext-files, which exist in
// RPC mode only. A failing script does what it does under the CLI.

// Operation is what CRIU is doing when it sends a stage.
type Operation string

const (
	Dump    Operation = "dump"
	Restore Operation = "restore"
)

// TaskDelete is not a CRIU stage: it is the deletion of a restored
// container (see the poststop entry). It shares the type so that the map
// has one key type; TestEveryCRIUStageIsMapped keeps it out of CRIU's names.
const TaskDelete criu.Stage = "task-delete"

// Policy is what a failure at a stage does.
type Policy string

const (
	// Abort answers CRIU false: a restore is aborted and CRIU kills the
	// restored tree; a dump fails and CRIU resumes the dumped tasks.
	Abort Policy = "abort"
	// KillTree is for stages where CRIU ignores a false answer: ckpt kills
	// the restored tree itself and fails the restore.
	KillTree Policy = "kill the tree"
	// LogOnly logs the failure; the operation goes on.
	LogOnly Policy = "log only"
)

// Step is what ckpt does at one stage of one operation.
type Step struct {
	Op    Operation
	Stage criu.Stage
	// Phases are the OCI hook phases run here, in this order, in Where,
	// with State.status Status.
	Phases []Phase
	Where  Namespace
	Status specs.ContainerState
	// HookFailure is what a failing hook does.
	HookFailure Policy
	// Scripts says whether the container's action scripts run here, and
	// ScriptFailure what a failing one does (what CRIU's CLI does).
	Scripts       bool
	ScriptFailure Policy
	// CatchUp is an earlier stage whose phases run first if CRIU did not
	// send it: a tree without namespaces of its own gets no
	// setup-namespaces, and prestart/createRuntime then run here.
	CatchUp criu.Stage
}

// Steps is the map. OCI hooks run before action scripts within a stage.
var Steps = []Step{
	{Op: Dump, Stage: criu.PreStream, Scripts: true, ScriptFailure: Abort},
	{Op: Dump, Stage: criu.PreDump, Scripts: true, ScriptFailure: Abort},
	{Op: Dump, Stage: criu.NetworkLock, Scripts: true, ScriptFailure: Abort},
	{Op: Dump, Stage: criu.QueryExtFiles},
	{Op: Dump, Stage: criu.PostDump, Scripts: true, ScriptFailure: Abort},
	{Op: Dump, Stage: criu.NetworkUnlock, Scripts: true, ScriptFailure: LogOnly},
	{Op: Dump, Stage: criu.StatusReady, Scripts: true, ScriptFailure: Abort},

	{Op: Restore, Stage: criu.PreStream, Scripts: true, ScriptFailure: Abort},
	{Op: Restore, Stage: criu.PreRestore, Scripts: true, ScriptFailure: Abort},
	{
		Op: Restore, Stage: criu.SetupNamespaces,
		Phases: []Phase{Prestart, CreateRuntime}, Where: RuntimeNamespace, Status: specs.StateCreating, HookFailure: Abort,
		Scripts: true, ScriptFailure: Abort,
	},
	{Op: Restore, Stage: criu.PostSetupNamespaces, Scripts: true, ScriptFailure: Abort},
	{Op: Restore, Stage: criu.OrphanPtsMaster},
	{
		Op: Restore, Stage: criu.PostRestore,
		Phases: []Phase{CreateContainer}, Where: ContainerNamespace, Status: specs.StateCreating, HookFailure: Abort,
		Scripts: true, ScriptFailure: Abort, CatchUp: criu.SetupNamespaces,
	},
	{Op: Restore, Stage: criu.NetworkUnlock, Scripts: true, ScriptFailure: LogOnly},
	{
		Op: Restore, Stage: criu.PreResume,
		Phases: []Phase{StartContainer}, Where: ContainerNamespace, Status: specs.StateCreated, HookFailure: KillTree,
		Scripts: true, ScriptFailure: LogOnly,
	},
	{
		Op: Restore, Stage: criu.PostResume,
		Phases: []Phase{Poststart}, Where: RuntimeNamespace, Status: specs.StateRunning, HookFailure: KillTree,
		Scripts: true, ScriptFailure: LogOnly,
	},
	{Op: Restore, Stage: criu.StatusReady, Scripts: true, ScriptFailure: Abort},
	{
		Op: Restore, Stage: TaskDelete,
		Phases: []Phase{Poststop}, Where: RuntimeNamespace, Status: specs.StateStopped, HookFailure: LogOnly,
	},
}

// Lookup returns the step for stage in op. A stage the map does not know
// (a newer CRIU's) gets action scripts only, failing as CRIU's CLI fails a
// stage whose script fails.
func Lookup(op Operation, stage criu.Stage) Step {
	for _, s := range Steps {
		if s.Op == op && s.Stage == stage {
			return s
		}
	}
	return Step{Op: op, Stage: stage, Scripts: true, ScriptFailure: Abort}
}

// OperationOf guesses the operation from a stage name alone, for a caller
// that only has CRIU's CRTOOLS_SCRIPT_ACTION: the stages only a dump sends
// are Dump, the others Restore (the stages both send carry no OCI hooks).
func OperationOf(stage criu.Stage) Operation {
	for _, s := range Steps {
		if s.Stage == stage && s.Op == Dump && !knownIn(Restore, stage) {
			return Dump
		}
	}
	return Restore
}

func knownIn(op Operation, stage criu.Stage) bool {
	for _, s := range Steps {
		if s.Op == op && s.Stage == stage {
			return true
		}
	}
	return false
}
