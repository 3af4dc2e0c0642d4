package plan

import (
	"reflect"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
)

func TestParsePageServer(t *testing.T) {
	tests := []struct {
		in      string
		want    PageServer
		wantErr bool
	}{
		{in: "127.0.0.1:27000", want: PageServer{Host: "127.0.0.1", Port: 27000}},
		{in: "[::1]:1", want: PageServer{Host: "::1", Port: 1}},
		{in: ":27000", want: PageServer{Port: 27000}},
		{in: "127.0.0.1", wantErr: true},
		{in: "127.0.0.1:0", wantErr: true},
		{in: "127.0.0.1:65536", wantErr: true},
		{in: "127.0.0.1:http", wantErr: true},
		{in: "no-such-host.invalid:1", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParsePageServer(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("%q: error %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if err == nil && got != tt.want {
			t.Errorf("%q: %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestSetLazyDump(t *testing.T) {
	tests := []struct {
		name    string
		ps      *PageServer
		want    *rpc.CriuOpts
		wantErr bool
	}{
		{name: "not lazy", want: &rpc.CriuOpts{}},
		{name: "plain", ps: &PageServer{Host: "10.0.0.1", Port: 27000},
			want: &rpc.CriuOpts{LazyPages: ptr(true), Ps: &rpc.CriuPageServerInfo{Address: ptr("10.0.0.1"), Port: ptr(int32(27000))}}},
		{name: "tls", ps: &PageServer{Port: 1, TLS: TLS{Enabled: true, CACert: "ca", Cert: "c", Key: "k"}},
			want: &rpc.CriuOpts{LazyPages: ptr(true), Ps: &rpc.CriuPageServerInfo{Address: ptr(""), Port: ptr(int32(1))},
				Tls: ptr(true), TlsCacert: ptr("ca"), TlsCert: ptr("c"), TlsKey: ptr("k")}},
		{name: "no port", ps: &PageServer{Host: "10.0.0.1"}, wantErr: true},
		{name: "cert without key", ps: &PageServer{Port: 1, TLS: TLS{Enabled: true, Cert: "c"}}, wantErr: true},
		{name: "files without tls", ps: &PageServer{Port: 1, TLS: TLS{CACert: "ca"}}, wantErr: true},
	}
	for _, tt := range tests {
		got := &rpc.CriuOpts{}
		err := setLazyDump(got, tt.ps)
		if (err != nil) != tt.wantErr {
			t.Errorf("%s: error %v, want error %v", tt.name, err, tt.wantErr)
			continue
		}
		if err == nil && !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestTLSArgs(t *testing.T) {
	got := TLS{Enabled: true, CACert: "ca", Cert: "c", Key: "k"}.Args()
	want := []string{"--tls", "--tls-cacert", "ca", "--tls-cert", "c", "--tls-key", "k"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%q, want %q", got, want)
	}
	if a := (TLS{CACert: "ca"}).Args(); a != nil {
		t.Errorf("TLS off: %q, want none", a)
	}
}
