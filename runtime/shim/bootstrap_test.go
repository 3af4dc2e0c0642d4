package shim

import (
	"testing"

	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// TestStartRuntimeOptions reads the runtime options in both forms
// containerd writes to `shim start`: a bare Any (2.2, 2.3) and the
// bootstrap params of 2.4, built here by field number as containerd's
// bootstrap.proto numbers them.
func TestStartRuntimeOptions(t *testing.T) {
	anyOf := func(m proto.Message) []byte {
		a, err := typeurl.MarshalAnyToProto(m)
		if err != nil {
			t.Fatal(err)
		}
		data, err := proto.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	unknown, err := proto.Marshal(&anypb.Any{TypeUrl: "example.com/not.Registered", Value: []byte{1}})
	if err != nil {
		t.Fatal(err)
	}
	bootstrap := func(exts ...[]byte) []byte {
		var b []byte
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendString(b, "container-id")
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendString(b, "k8s.io")
		b = protowire.AppendTag(b, 3, protowire.VarintType)
		b = protowire.AppendVarint(b, protowire.EncodeZigZag(-4)) // any varint: LOG_LEVEL_DEBUG
		b = protowire.AppendTag(b, 4, protowire.BytesType)
		b = protowire.AppendString(b, "v2.4.2")
		for _, e := range exts {
			var ext []byte
			ext = protowire.AppendTag(ext, 1, protowire.BytesType)
			ext = protowire.AppendBytes(ext, e)
			b = protowire.AppendTag(b, 8, protowire.BytesType)
			b = protowire.AppendBytes(b, ext)
		}
		b = protowire.AppendTag(b, 9, protowire.BytesType)
		return protowire.AppendString(b, "/run/containerd/s")
	}
	opts := anyOf(&options.Options{ShimCgroup: "/shims"})
	for _, tc := range []struct {
		name    string
		data    []byte
		want    string // ShimCgroup; "-" for no options
		wantErr bool
	}{
		{name: "none", data: nil, want: "-"},
		{name: "any (2.2)", data: opts, want: "/shims"},
		{name: "any of another type", data: anyOf(&options.CheckpointOptions{Exit: true}), want: "-"},
		{name: "bootstrap (2.4)", data: bootstrap(unknown, opts), want: "/shims"},
		{name: "bootstrap without options", data: bootstrap(), want: "-"},
		{name: "garbage", data: []byte{0xff, 0xff, 0xff}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := startRuntimeOptions(tc.data)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("got %v; want an error", o)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := "-"
			if o != nil {
				got = o.ShimCgroup
			}
			if got != tc.want {
				t.Fatalf("shim cgroup %q, want %q", got, tc.want)
			}
		})
	}
}
