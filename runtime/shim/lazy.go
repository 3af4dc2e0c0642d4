package shim

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
)

// RestoreAnnotationPrefix starts the container annotations that set how
// the shim restores it, e.g. io.ckpt.restore.lazy=true. They are read
// from the bundle's config.json when a task is created from a checkpoint.
const RestoreAnnotationPrefix = "io.ckpt.restore."

// LazyRestore is a restore with lazy pages: the container runs before its
// memory is read; criu lazy-pages fills it in from the images or, with
// PageServer, from a lazy dump's page server.
type LazyRestore struct {
	// PageServer is ADDR:PORT of the source's page server ("": the
	// memory is in the checkpoint).
	PageServer string
	// TLS for the page server; the files are paths on this host.
	TLS                        bool
	TLSCACert, TLSCert, TLSKey string
}

// restoreAnnotations are the io.ckpt.restore.* keys.
var restoreAnnotations = map[string]func(l *LazyRestore, lazy *bool, v string) error{
	"lazy": func(_ *LazyRestore, lazy *bool, v string) (err error) {
		*lazy, err = strconv.ParseBool(v)
		return err
	},
	"page-server": func(l *LazyRestore, _ *bool, v string) error { l.PageServer = v; return nil },
	"tls": func(l *LazyRestore, _ *bool, v string) (err error) {
		l.TLS, err = strconv.ParseBool(v)
		return err
	},
	"tls-cacert": func(l *LazyRestore, _ *bool, v string) error { l.TLSCACert = v; return nil },
	"tls-cert":   func(l *LazyRestore, _ *bool, v string) error { l.TLSCert = v; return nil },
	"tls-key":    func(l *LazyRestore, _ *bool, v string) error { l.TLSKey = v; return nil },
}

// lazyRestoreOf reads the restore annotations: nil without
// io.ckpt.restore.lazy=true. A mistake is an invalid argument, so that the
// restore fails before CRIU runs.
func lazyRestoreOf(annotations map[string]string) (*LazyRestore, error) {
	var (
		l    LazyRestore
		lazy bool
		set  bool
	)
	for _, k := range slices.Sorted(maps.Keys(annotations)) {
		name, ok := strings.CutPrefix(k, RestoreAnnotationPrefix)
		if !ok {
			continue
		}
		apply, known := restoreAnnotations[name]
		if !known {
			return nil, fmt.Errorf("annotation %s: unknown restore option (known: %s): %w", k,
				strings.Join(slices.Sorted(maps.Keys(restoreAnnotations)), ", "), errdefs.ErrInvalidArgument)
		}
		if err := apply(&l, &lazy, annotations[k]); err != nil {
			return nil, fmt.Errorf("annotation %s: %w: %w", k, err, errdefs.ErrInvalidArgument)
		}
		set = set || name != "lazy"
	}
	if !lazy {
		if set {
			return nil, fmt.Errorf("annotations %s*: page server and TLS options need %slazy=true: %w",
				RestoreAnnotationPrefix, RestoreAnnotationPrefix, errdefs.ErrInvalidArgument)
		}
		return nil, nil
	}
	return &l, nil
}
