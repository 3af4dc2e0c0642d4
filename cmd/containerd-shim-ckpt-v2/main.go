// Command containerd-shim-ckpt-v2 is ckpt's containerd shim: runtime type
// io.containerd.ckpt.v2. Containers run on runc; checkpoint and restore go
// through ckpt's own CRIU driver (runtime/container).
package main

import (
	"context"

	ckptshim "github.com/ckpt-dev/ckpt/runtime/shim"
	"github.com/containerd/containerd/v2/pkg/shim"
)

func main() {
	ckptshim.WarmCgroupLock()
	ckptshim.RegisterPlugin(engine{})
	shim.Run(context.Background(), ckptshim.NewManager(ckptshim.RuntimeName, engine{}))
}
