// Package hooks runs a container's OCI runtime-spec hooks and CRIU action
// scripts at the CRIU stages of a checkpoint or restore.
//
// No runtime runs the OCI hooks a restored container needs at the right
// moment: runc runs prestart and createRuntime at setup-namespaces and never
// createContainer, startContainer or poststart; crun runs none. And CRIU
// accepts no user action scripts in RPC mode, so scripts written for
// `criu --action-script` cannot be used under runc or containerd.
//
// The package has three parts:
//
//   - HookRunner runs the hooks of one phase exactly as the runtime-spec
//     says (path, args, env, timeout, the State JSON on stdin), in the
//     runtime namespace or inside the container's namespaces.
//   - Steps (stagemap.go) is the one table that says what happens at each
//     CRIU stage: which OCI phases run, where, with which State status, and
//     what a failure does.
//   - Lifecycle applies that table for one dump or restore of one
//     container, and runs the container's action scripts (annotation
//     ActionScriptAnnotation) with the environment CRIU's CLI gives them.
//
// The package knows nothing of CRIU's wire format: stages are CRIU's
// notification names as plain strings ("setup-namespaces", ...).
package hooks
