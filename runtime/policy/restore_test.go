package policy

import (
	"errors"
	"testing"

	"github.com/ckpt-dev/ckpt/runtime/container"
	"github.com/containerd/errdefs"
)

func TestApplyRestoreAnnotations(t *testing.T) {
	tests := []struct {
		name        string
		annotations map[string]string
		want        container.RestoreOptions
		wantErr     bool
	}{
		{name: "none", annotations: nil},
		{name: "other annotations", annotations: map[string]string{"io.ckpt.checkpoint.leave-running": "true"}},
		{name: "lazy from the images", annotations: map[string]string{"io.ckpt.restore.lazy": "true"}, want: container.RestoreOptions{LazyPages: true}},
		{name: "lazy off", annotations: map[string]string{"io.ckpt.restore.lazy": "false"}},
		{name: "from a page server with TLS", annotations: map[string]string{
			"io.ckpt.restore.lazy": "1", "io.ckpt.restore.page-server": "10.0.0.1:27000", "io.ckpt.restore.tls": "true",
			"io.ckpt.restore.tls-cacert": "/ca.pem", "io.ckpt.restore.tls-cert": "/c.pem", "io.ckpt.restore.tls-key": "/k.pem",
		}, want: container.RestoreOptions{LazyPages: true, PageServer: "10.0.0.1:27000",
			TLS: container.TLS{Enabled: true, CACert: "/ca.pem", Cert: "/c.pem", Key: "/k.pem"}}},
		{name: "a TLS file means TLS", annotations: map[string]string{
			"io.ckpt.restore.lazy": "true", "io.ckpt.restore.page-server": "h:1", "io.ckpt.restore.tls-cacert": "/ca.pem",
		}, want: container.RestoreOptions{LazyPages: true, PageServer: "h:1", TLS: container.TLS{Enabled: true, CACert: "/ca.pem"}}},
		{name: "not a bool", annotations: map[string]string{"io.ckpt.restore.lazy": "yes please"}, wantErr: true},
		{name: "unknown key", annotations: map[string]string{"io.ckpt.restore.lazzy": "true"}, wantErr: true},
		{name: "page server without lazy", annotations: map[string]string{"io.ckpt.restore.page-server": "10.0.0.1:1"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got container.RestoreOptions
			err := ApplyRestoreAnnotations(&got, tt.annotations)
			if tt.wantErr {
				if !errors.Is(err, errdefs.ErrInvalidArgument) {
					t.Fatalf("error %v, want an invalid argument", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.LazyPages != tt.want.LazyPages || got.PageServer != tt.want.PageServer || got.TLS != tt.want.TLS {
				t.Fatalf("got lazy=%v server=%q tls=%+v, want lazy=%v server=%q tls=%+v",
					got.LazyPages, got.PageServer, got.TLS, tt.want.LazyPages, tt.want.PageServer, tt.want.TLS)
			}
		})
	}
}
