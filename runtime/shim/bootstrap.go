package shim

import (
	"fmt"

	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// startRuntimeOptions reads the runtime options containerd writes to the
// stdin of `shim start`: up to 2.3 a protobuf Any holding them; from 2.4
// on a containerd.runtime.bootstrap.v1.BootstrapParams, which carries
// them as an extension (field 8, an Extension whose field 1 is the Any).
// The bootstrap message is decoded by its field numbers: its Go type is
// in an API module newer than the one the shim builds against. Read as
// an Any, a BootstrapParams gives the container id as type URL, which no
// type is registered under, so the two forms do not mix. nil, nil: no
// options, or options of another type (Docker's runtimeoptions for a
// runtime configured with a ConfigPath).
func startRuntimeOptions(data []byte) (*options.Options, error) {
	if len(data) == 0 {
		return nil, nil
	}
	var a anypb.Any
	if err := proto.Unmarshal(data, &a); err == nil {
		if v, err := typeurl.UnmarshalAny(&a); err == nil {
			o, _ := v.(*options.Options)
			return o, nil
		}
	}
	exts, err := bootstrapExtensions(data)
	if err != nil {
		return nil, fmt.Errorf("runtime options on stdin: neither an Any nor bootstrap params: %w", err)
	}
	for _, e := range exts {
		var a anypb.Any
		if err := proto.Unmarshal(e, &a); err != nil {
			return nil, fmt.Errorf("bootstrap extension: %w", err)
		}
		v, err := typeurl.UnmarshalAny(&a)
		if err != nil {
			continue // an extension of a type this shim does not know
		}
		if o, ok := v.(*options.Options); ok {
			return o, nil
		}
	}
	return nil, nil
}

// bootstrapExtensions returns the Any of each extension of a
// BootstrapParams message.
func bootstrapExtensions(data []byte) ([][]byte, error) {
	var out [][]byte
	err := walkFields(data, func(num protowire.Number, typ protowire.Type, v []byte) error {
		if num != 8 || typ != protowire.BytesType {
			return nil
		}
		return walkFields(v, func(num protowire.Number, typ protowire.Type, v []byte) error {
			if num == 1 && typ == protowire.BytesType {
				out = append(out, v)
			}
			return nil
		})
	})
	return out, err
}

// walkFields calls fn for each field of a protobuf message; v is the
// contents of a length-delimited field, nil for the others.
func walkFields(data []byte, fn func(protowire.Number, protowire.Type, []byte) error) error {
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return protowire.ParseError(n)
		}
		data = data[n:]
		var v []byte
		if typ == protowire.BytesType {
			v, n = protowire.ConsumeBytes(data)
		} else {
			n = protowire.ConsumeFieldValue(num, typ, data)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		if err := fn(num, typ, v); err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}
