package migrate

import (
	"github.com/containerd/typeurl/v2"
)

// Options are ckpt's own checkpoint options for post-copy, shared by
// `ckpt migrate` and the shim: JSON-encoded in a protobuf Any under
// OptionsTypeURL (typeurl registers a plain Go type).
//
// They cannot travel in CheckpointTaskRequest.Options through containerd
// 2.x: its task service decodes Options itself and accepts only runc's
// CheckpointOptions (plugins/services/tasks/local.go, getCheckpointPath),
// so another type is refused before the shim sees it
// (TestCheckpointOptionsOfOtherType shows it). The channel that does
// reach the shim unchanged is the task Update's annotations
// (UpdateTaskRequest.Annotations): see docs/DESIGN.md, "Migration".
type Options struct {
	// LazyPages: dump with CRIU's lazy pages and leave the page server
	// serving the memory; the checkpoint answers at status-ready.
	LazyPages bool `json:"lazy_pages,omitempty"`
	// PageServer is HOST:PORT the source's page server binds.
	PageServer string `json:"page_server,omitempty"`
	// TLS: CRIU's --tls with the shim's certificate files.
	TLS bool `json:"tls,omitempty"`
}

// OptionsTypeURL is Options' type URL.
const OptionsTypeURL = "io.ckpt.migrate.v1/Options"

func init() {
	typeurl.Register(&Options{}, "io.ckpt.migrate.v1", "Options")
}
