package policy

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ckpt-dev/ckpt/runtime/container"
	"github.com/containerd/errdefs"
)

// A lazy checkpoint through containerd (post-copy migration) needs options
// containerd does not carry: its task service accepts only runc's
// CheckpointOptions in a checkpoint request and refuses any other type
// before the shim sees it. A task Update's annotations reach the shim
// unchanged, so a client sets the next checkpoint's lazy options with an
// Update, then checkpoints; and ends a transfer early with another.

// NextCheckpointPrefix starts the Update annotations that make the task's
// next checkpoint a lazy dump, e.g.
// io.ckpt.next-checkpoint.page-server=10.0.0.1:27027. The keys are those
// of lazySetters; page-server is required.
const NextCheckpointPrefix = "io.ckpt.next-checkpoint."

// TransferAnnotation=abort in an Update ends the task's lazy transfer:
// CRIU's page server goes and the task runs on, thawed.
const (
	TransferAnnotation = "io.ckpt.transfer"
	TransferAbort      = "abort"
)

// Lazy are a lazy checkpoint's options: where its page server listens,
// its TLS (file paths on the shim's host) and how long the task may stay
// frozen serving its memory.
type Lazy struct {
	PageServer      string
	TLS             container.TLS
	TransferTimeout time.Duration
}

// Apply makes o a lazy dump with l's options.
func (l Lazy) Apply(o *container.CheckpointOptions) {
	o.LazyPages, o.PageServer, o.TLS, o.TransferTimeout = true, l.PageServer, l.TLS, l.TransferTimeout
}

var lazySetters = map[string]func(l *Lazy, v string) error{
	"page-server": func(l *Lazy, v string) error { l.PageServer = v; return nil },
	"tls":         func(l *Lazy, v string) (err error) { l.TLS.Enabled, err = strconv.ParseBool(v); return err },
	"tls-cacert":  func(l *Lazy, v string) error { l.TLS.CACert = v; return nil },
	"tls-cert":    func(l *Lazy, v string) error { l.TLS.Cert = v; return nil },
	"tls-key":     func(l *Lazy, v string) error { l.TLS.Key = v; return nil },
	"tls-no-cn-verify": func(l *Lazy, v string) (err error) {
		l.TLS.NoCNVerify, err = strconv.ParseBool(v)
		return err
	},
	"transfer-timeout": func(l *Lazy, v string) (err error) { l.TransferTimeout, err = time.ParseDuration(v); return err },
}

// Annotations are l as Update annotations.
func (l Lazy) Annotations() map[string]string {
	a := map[string]string{NextCheckpointPrefix + "page-server": l.PageServer}
	addTLS(a, NextCheckpointPrefix, l.TLS)
	if l.TransferTimeout > 0 {
		a[NextCheckpointPrefix+"transfer-timeout"] = l.TransferTimeout.String()
	}
	return a
}

// addTLS writes t as the tls* annotations under prefix, the keys both
// lazySetters and restoreAnnotations read.
func addTLS(a map[string]string, prefix string, t container.TLS) {
	set := func(k, v string) {
		if v != "" {
			a[prefix+k] = v
		}
	}
	if t.Enabled {
		set("tls", "true")
	}
	set("tls-cacert", t.CACert)
	set("tls-cert", t.Cert)
	set("tls-key", t.Key)
	if t.NoCNVerify {
		set("tls-no-cn-verify", "true")
	}
}

// Update is what a task Update's annotations ask of ckpt.
type Update struct {
	// Lazy, if set, makes the next checkpoint a lazy dump.
	Lazy *Lazy
	// Abort ends the running lazy transfer.
	Abort bool
}

// ParseUpdate reads ckpt's annotations of a task Update; others are left
// to whoever sets them. A mistake is an invalid argument: a misspelt key
// must not silently make a full dump that ends the task.
func ParseUpdate(annotations map[string]string) (Update, error) {
	var u Update
	var l Lazy
	for _, k := range slices.Sorted(maps.Keys(annotations)) {
		v := annotations[k]
		if k == TransferAnnotation {
			if v != TransferAbort {
				return u, fmt.Errorf("annotation %s=%q: the only value is %q: %w", k, v, TransferAbort, errdefs.ErrInvalidArgument)
			}
			u.Abort = true
			continue
		}
		name, ok := strings.CutPrefix(k, NextCheckpointPrefix)
		if !ok {
			continue
		}
		set, known := lazySetters[name]
		if !known {
			return u, fmt.Errorf("annotation %s: unknown option (known: %s): %w", k,
				strings.Join(slices.Sorted(maps.Keys(lazySetters)), ", "), errdefs.ErrInvalidArgument)
		}
		if err := set(&l, v); err != nil {
			return u, fmt.Errorf("annotation %s: %w: %w", k, err, errdefs.ErrInvalidArgument)
		}
		u.Lazy = &l
	}
	if u.Lazy != nil {
		if l.PageServer == "" {
			return u, fmt.Errorf("annotations %s*: a lazy checkpoint needs %spage-server=HOST:PORT: %w",
				NextCheckpointPrefix, NextCheckpointPrefix, errdefs.ErrInvalidArgument)
		}
		// A TLS file given means TLS, as criu's --tls-* options do.
		l.TLS.Enabled = l.TLS.Enabled || l.TLS.CACert != "" || l.TLS.Cert != "" || l.TLS.Key != ""
	}
	if u.Abort && u.Lazy != nil {
		return u, fmt.Errorf("an Update either sets the next checkpoint's options or aborts a transfer, not both: %w", errdefs.ErrInvalidArgument)
	}
	return u, nil
}
