package main

import "fmt"

// Workload is a process tree to checkpoint: Args run inside a busybox
// rootfs that also holds /bin/memhog.
type Workload struct {
	Name     string
	Args     []string
	MemMiB   int
	Terminal bool
	// Procs is how many processes the restored tree must have (0: not
	// checked).
	Procs int
	// Ready is a line the workload prints once it is set up.
	Ready string
}

func workloads(sizes []int) []Workload {
	w := []Workload{
		{Name: "idle-shell", Args: []string{"/bin/sh", "-c", "echo ready; while :; do sleep 1; done"}, Ready: "ready"},
	}
	for _, mib := range sizes {
		w = append(w, Workload{Name: fmt.Sprintf("mem-%dMiB", mib), Args: []string{"/bin/memhog", fmt.Sprint(mib)}, MemMiB: mib, Ready: "ready"})
	}
	w = append(w,
		Workload{Name: "tree-50", Args: []string{"/bin/sh", "-c", "for i in $(seq 50); do sleep 100000 & done; echo ready; wait"}, Procs: 51, Ready: "ready"},
		Workload{Name: "tty-shell", Args: []string{"/bin/sh"}, Terminal: true},
	)
	return w
}
