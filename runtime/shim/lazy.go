package shim

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	rcontainer "github.com/ckpt-dev/ckpt/runtime/container"
	"github.com/containerd/errdefs"
)

// RestoreAnnotationPrefix starts the container annotations that set how
// the shim restores it, e.g. io.ckpt.restore.lazy=true. They are read
// from the bundle's config.json when a task is created from a checkpoint.
const RestoreAnnotationPrefix = "io.ckpt.restore."

// restoreAnnotations set the lazy-pages fields of runtime/container's
// RestoreOptions: the restore runs before its memory is read, and criu
// lazy-pages fills it in from the images or, with a page server, from a
// lazy dump's page server (the TLS files are paths on this host).
var restoreAnnotations = map[string]func(o *rcontainer.RestoreOptions, v string) error{
	"lazy": func(o *rcontainer.RestoreOptions, v string) (err error) {
		o.LazyPages, err = strconv.ParseBool(v)
		return err
	},
	"page-server": func(o *rcontainer.RestoreOptions, v string) error { o.PageServer = v; return nil },
	"tls": func(o *rcontainer.RestoreOptions, v string) (err error) {
		o.TLS.Enabled, err = strconv.ParseBool(v)
		return err
	},
	"tls-cacert": func(o *rcontainer.RestoreOptions, v string) error { o.TLS.CACert = v; return nil },
	"tls-cert":   func(o *rcontainer.RestoreOptions, v string) error { o.TLS.Cert = v; return nil },
	"tls-key":    func(o *rcontainer.RestoreOptions, v string) error { o.TLS.Key = v; return nil },
}

// applyRestoreAnnotations sets o's lazy-pages options from the
// io.ckpt.restore.* annotations. A mistake is an invalid argument, so
// that the restore fails before CRIU runs.
func applyRestoreAnnotations(o *rcontainer.RestoreOptions, annotations map[string]string) error {
	var set rcontainer.RestoreOptions
	other := false
	for _, k := range slices.Sorted(maps.Keys(annotations)) {
		name, ok := strings.CutPrefix(k, RestoreAnnotationPrefix)
		if !ok {
			continue
		}
		apply, known := restoreAnnotations[name]
		if !known {
			return fmt.Errorf("annotation %s: unknown restore option (known: %s): %w", k,
				strings.Join(slices.Sorted(maps.Keys(restoreAnnotations)), ", "), errdefs.ErrInvalidArgument)
		}
		if err := apply(&set, annotations[k]); err != nil {
			return fmt.Errorf("annotation %s: %w: %w", k, err, errdefs.ErrInvalidArgument)
		}
		other = other || name != "lazy"
	}
	if !set.LazyPages {
		if other {
			return fmt.Errorf("annotations %s*: page server and TLS options need %slazy=true: %w",
				RestoreAnnotationPrefix, RestoreAnnotationPrefix, errdefs.ErrInvalidArgument)
		}
		return nil
	}
	// A TLS file given means TLS, as criu's --tls-* options do.
	set.TLS.Enabled = set.TLS.Enabled || set.TLS.CACert != "" || set.TLS.Cert != "" || set.TLS.Key != ""
	o.LazyPages, o.PageServer, o.TLS = true, set.PageServer, set.TLS
	return nil
}
