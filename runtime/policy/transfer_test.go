package policy

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/ckpt-dev/ckpt/runtime/container"
	"github.com/containerd/errdefs"
)

func TestParseUpdate(t *testing.T) {
	p := NextCheckpointPrefix
	tests := []struct {
		name        string
		annotations map[string]string
		want        Update
		wantErr     bool
	}{
		{name: "none"},
		{name: "others' annotations", annotations: map[string]string{"io.kubernetes.x": "1"}},
		{name: "lazy", annotations: map[string]string{p + "page-server": "10.0.0.1:27027"},
			want: Update{Lazy: &Lazy{PageServer: "10.0.0.1:27027"}}},
		{name: "lazy with TLS and a timeout", annotations: map[string]string{
			p + "page-server": "h:1", p + "tls-cacert": "/ca", p + "tls-cert": "/c", p + "tls-key": "/k",
			p + "tls-no-cn-verify": "true", p + "transfer-timeout": "90s"},
			want: Update{Lazy: &Lazy{PageServer: "h:1", TransferTimeout: 90 * time.Second,
				TLS: container.TLS{Enabled: true, CACert: "/ca", Cert: "/c", Key: "/k", NoCNVerify: true}}}},
		{name: "abort", annotations: map[string]string{TransferAnnotation: TransferAbort}, want: Update{Abort: true}},
		{name: "abort misspelt", annotations: map[string]string{TransferAnnotation: "stop"}, wantErr: true},
		{name: "unknown key", annotations: map[string]string{p + "page-sever": "h:1"}, wantErr: true},
		{name: "no page server", annotations: map[string]string{p + "tls": "true"}, wantErr: true},
		{name: "bad timeout", annotations: map[string]string{p + "page-server": "h:1", p + "transfer-timeout": "soon"}, wantErr: true},
		{name: "abort and options", annotations: map[string]string{p + "page-server": "h:1", TransferAnnotation: TransferAbort}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseUpdate(tt.annotations)
			if tt.wantErr {
				if !errors.Is(err, errdefs.ErrInvalidArgument) {
					t.Fatalf("error %v, want an invalid argument", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// What a client writes is what the shim reads, on both ends of a move.
func TestAnnotationsRoundTrip(t *testing.T) {
	tls := container.TLS{Enabled: true, CACert: "/ca", Cert: "/c", Key: "/k", NoCNVerify: true}
	l := Lazy{PageServer: "10.0.0.1:27027", TLS: tls, TransferTimeout: time.Minute}
	u, err := ParseUpdate(l.Annotations())
	if err != nil || u.Lazy == nil || !reflect.DeepEqual(*u.Lazy, l) {
		t.Fatalf("lazy checkpoint: got %+v (%v), want %+v", u.Lazy, err, l)
	}
	var o container.CheckpointOptions
	u.Lazy.Apply(&o)
	if !o.LazyPages || o.PageServer != l.PageServer || o.TLS != tls || o.TransferTimeout != time.Minute {
		t.Errorf("applied: %+v", o)
	}
	r := LazyRestore{PageServer: "10.0.0.1:27027", TLS: tls}
	var ro container.RestoreOptions
	if err := ApplyRestoreAnnotations(&ro, r.Annotations()); err != nil {
		t.Fatal(err)
	}
	if !ro.LazyPages || ro.PageServer != r.PageServer || ro.TLS != tls {
		t.Errorf("lazy restore: got %+v, want %+v", ro, r)
	}
}
