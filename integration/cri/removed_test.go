package cri_test

import (
	"strings"
	"testing"
)

// checkRestoreRemoved checks the restore of a containerd without restore
// through CreateContainer (2.4, containerd #13871): nothing is restored.
// The archive's path is no image, and the create says it cannot find
// it; a checkpoint image is an image, of the archive's files: the create
// makes an ordinary container of it, whose start fails (no sh in it).
// Either way nothing is left once the pods are removed.
func checkRestoreRemoved(t *testing.T, o *outcome) {
	t.Helper()
	if o.kind.fromImage {
		if o.restoreCreateErr == nil && o.restoreStartErr == nil {
			t.Errorf("containerd %s started a container from the checkpoint image %v", shared.env.version, o.restored)
		}
	} else if err := o.restoreCreateErr; err == nil || !strings.Contains(err.Error(), "code = NotFound") || !strings.Contains(err.Error(), o.archive) {
		t.Errorf("containerd %s: CreateContainer with the archive as image: %v; want NotFound naming %s", shared.env.version, err, o.archive)
	}
	if len(o.restored) > 0 {
		t.Errorf("containerd %s restored a counter: %v", shared.env.version, o.restored)
	}
	t.Logf("containerd %s has no restore through CreateContainer: create: %v; start: %v", shared.env.version, o.restoreCreateErr, o.restoreStartErr)
	if len(o.leftovers) > 0 {
		t.Errorf("left behind after removing the pods:\n%s", strings.Join(o.leftovers, "\n"))
	}
}
