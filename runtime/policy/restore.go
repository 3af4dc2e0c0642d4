package policy

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/ckpt-dev/ckpt/runtime/container"
	"github.com/containerd/errdefs"
)

// RestoreAnnotationPrefix starts the container annotations that set how
// the shim restores it, e.g. io.ckpt.restore.lazy=true. The shim reads
// them from the bundle's config.json when a task is created from a
// checkpoint; `ckpt migrate` puts them in the spec of the container it
// makes on the target (LazyRestore.Annotations).
const RestoreAnnotationPrefix = "io.ckpt.restore."

// restoreAnnotations set the lazy-pages fields of runtime/container's
// RestoreOptions: the restore runs before its memory is read, and criu
// lazy-pages fills it in from the images or, with a page server, from a
// lazy dump's page server (the TLS files are paths on this host).
var restoreAnnotations = map[string]func(o *container.RestoreOptions, v string) error{
	"lazy": func(o *container.RestoreOptions, v string) (err error) {
		o.LazyPages, err = strconv.ParseBool(v)
		return err
	},
	"page-server": func(o *container.RestoreOptions, v string) error { o.PageServer = v; return nil },
	"tls": func(o *container.RestoreOptions, v string) (err error) {
		o.TLS.Enabled, err = strconv.ParseBool(v)
		return err
	},
	"tls-cacert": func(o *container.RestoreOptions, v string) error { o.TLS.CACert = v; return nil },
	"tls-cert":   func(o *container.RestoreOptions, v string) error { o.TLS.Cert = v; return nil },
	"tls-key":    func(o *container.RestoreOptions, v string) error { o.TLS.Key = v; return nil },
	"tls-no-cn-verify": func(o *container.RestoreOptions, v string) (err error) {
		o.TLS.NoCNVerify, err = strconv.ParseBool(v)
		return err
	},
}

// ApplyRestoreAnnotations sets o's lazy-pages options from the
// io.ckpt.restore.* annotations. A mistake is an invalid argument, so
// that the restore fails before CRIU runs.
func ApplyRestoreAnnotations(o *container.RestoreOptions, annotations map[string]string) error {
	var set container.RestoreOptions
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

// LazyRestore are the io.ckpt.restore.* options of a restore that fetches
// its memory from a lazy dump's page server (TLS files: paths on the
// restoring host).
type LazyRestore struct {
	PageServer string
	TLS        container.TLS
}

// Annotations are r as container annotations.
func (r LazyRestore) Annotations() map[string]string {
	a := map[string]string{RestoreAnnotationPrefix + "lazy": "true", RestoreAnnotationPrefix + "page-server": r.PageServer}
	addTLS(a, RestoreAnnotationPrefix, r.TLS)
	return a
}
