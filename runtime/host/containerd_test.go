package host

import (
	"errors"
	"strings"
	"testing"
)

const ckptHandlerV3 = `version = 3
[plugins.'io.containerd.cri.v1.runtime']
  enable_experimental_restore_via_create = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.ckpt]
    runtime_type = 'io.containerd.ckpt.v2'
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
    runtime_type = 'io.containerd.runc.v2'
`

func TestContainerdItems(t *testing.T) {
	for _, tc := range []struct {
		name    string
		version string
		cfg     string
		cfgErr  error
		// want maps an item name to "ok" or a piece of its reason.
		want map[string]string
	}{
		{
			name: "2.2 with the restore switched on", version: "v2.2.9", cfg: ckptHandlerV3,
			want: map[string]string{"containerd": "ok", "CRI (crictl, kubelet)": "ok", "CRI checkpoint": "ok", "CRI restore": "ok"},
		},
		{
			name: "2.4: restore removed", version: "v2.4.2", cfg: ckptHandlerV3,
			want: map[string]string{"CRI checkpoint": "ok", "CRI restore": "#13871"},
		},
		{
			name: "2.2 without the restore switch", version: "v2.2.9",
			cfg:  strings.Replace(ckptHandlerV3, "enable_experimental_restore_via_create = true", "", 1),
			want: map[string]string{"CRI restore": "enable_experimental_restore_via_create"},
		},
		{
			name: "version 2 config, CRIU off", version: "v2.2.9",
			cfg: `version = 2
[plugins."io.containerd.grpc.v1.cri"]
  enable_criu = false
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.ckpt]
    runtime_type = "io.containerd.ckpt.v2"
`,
			want: map[string]string{"CRI (crictl, kubelet)": "ok", "CRI checkpoint": "enable_criu = false"},
		},
		{
			name: "no config: no ckpt handler", version: "v2.4.2", cfg: "",
			want: map[string]string{"containerd": "ok", "CRI (crictl, kubelet)": "no CRI runtime handler"},
		},
		{
			name: "CRI disabled", version: "v2.4.2", cfg: "version = 3\ndisabled_plugins = ['io.containerd.grpc.v1.cri']\n",
			want: map[string]string{"CRI (crictl, kubelet)": "ok"},
		},
		{
			name: "containerd 1.7", version: "v1.7.27", cfg: ckptHandlerV3,
			want: map[string]string{"containerd": "needs containerd 2.x"},
		},
		{
			name: "unreadable config", version: "v2.2.9", cfgErr: errors.New("permission denied"),
			want: map[string]string{"containerd config": "permission denied"},
		},
		{
			name: "broken config", version: "v2.2.9", cfg: "version = = 3",
			want: map[string]string{"containerd config": "/etc/containerd/config.toml"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			items := containerdItems(tc.version, "/usr/bin/containerd", DefaultContainerdConfig, []byte(tc.cfg), tc.cfgErr)
			got := map[string]Item{}
			for _, it := range items {
				if !it.Optional {
					t.Errorf("%s is not optional: it would fail the host check", it.Name)
				}
				got[it.Name] = it
			}
			for name, want := range tc.want {
				it, ok := got[name]
				switch {
				case !ok:
					t.Errorf("no item %q in %+v", name, items)
				case want == "ok" && !it.OK:
					t.Errorf("%s: not ok: %s", name, it.Reason)
				case want != "ok" && (it.OK || !strings.Contains(it.Reason, want)):
					t.Errorf("%s: ok %t, reason %q; want a reason with %q", name, it.OK, it.Reason, want)
				}
			}
		})
	}
}

func TestContainerdVersion(t *testing.T) {
	for out, want := range map[string]string{
		"containerd github.com/containerd/containerd/v2 v2.4.2 abc123\n": "v2.4.2",
		"containerd github.com/containerd/containerd/v2 v2.2.9 \n":       "v2.2.9",
		"garbage": "",
	} {
		if got := containerdVersion(out); got != want {
			t.Errorf("%q: %q, want %q", out, got, want)
		}
	}
}
