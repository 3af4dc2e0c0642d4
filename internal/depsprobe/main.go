package main
import (
 _ "github.com/containerd/containerd/v2/pkg/shim"
 _ "github.com/containerd/containerd/v2/pkg/stdio"
 _ "github.com/containerd/containerd/v2/pkg/sys/reaper"
 _ "github.com/containerd/containerd/v2/client"
 _ "github.com/containerd/containerd/api/runtime/task/v3"
 _ "github.com/containerd/containerd/api/types/runc/options"
 _ "github.com/opencontainers/runtime-spec/specs-go"
 _ "github.com/creack/pty"
 _ "github.com/sirupsen/logrus"
 _ "github.com/checkpoint-restore/go-criu/v8/rpc"
 _ "github.com/containerd/go-runc"
 _ "github.com/opencontainers/runc/libcontainer"
 _ "golang.org/x/sys/unix"
)
func main(){}
