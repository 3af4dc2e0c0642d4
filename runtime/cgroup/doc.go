// Package cgroup is a restored container's cgroup, made exactly as runc
// makes it (runc's own managers): created with its resources before CRIU
// moves the restored tasks into it, or joined by criu first where CRIU
// must place them itself (CRIUJoins), the cg_root entries and cgroup
// mount binds that re-root the image there, and its removal after a
// failed restore. It also finds the host's cgroup yard CRIU can use
// instead of mounting every hierarchy again (Yard). The host-wide
// migration lock is runtime/cgroupfs's.
package cgroup
