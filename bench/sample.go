package main

import (
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/stats"
)

// Sample is one checkpoint and restore of one workload by one target.
type Sample struct {
	Target   string `json:"target"`
	Workload string `json:"workload"`
	MemMiB   int    `json:"mem_mib,omitempty"`
	Rep      int    `json:"rep"`

	// Checkpoint is request to return; Restore is request to the task
	// running again.
	Checkpoint time.Duration `json:"checkpoint_ns"`
	Restore    time.Duration `json:"restore_ns"`
	// NewTask is the workload's first start, before any checkpoint:
	// request to the task running, where a runtime creates and starts
	// tasks (the shims).
	NewTask time.Duration `json:"new_task_ns,omitempty"`
	// RPC is how long the runtime itself took, where a client stands
	// between the caller and the runtime (containerd's task service).
	RPC *RPCTimes `json:"rpc,omitempty"`

	ImageBytes int64 `json:"image_bytes"`
	// ShimRSS is the resident memory of the target's shim once the
	// restored task runs; ShimPeakRSS the larger high-water mark of the
	// shim that checkpointed and the one that restored.
	ShimRSS     int64 `json:"shim_rss_bytes,omitempty"`
	ShimPeakRSS int64 `json:"shim_peak_rss_bytes,omitempty"`
	// ShimAnonRSS is ShimRSS's anonymous part (heap, stacks).
	ShimAnonRSS int64 `json:"shim_anon_rss_bytes,omitempty"`
	// NewShimRSS and NewShimAnonRSS are the same of the first shim once
	// the new task runs, before any checkpoint: what the binary and the
	// task service cost without the checkpoint and restore work.
	NewShimRSS     int64 `json:"new_shim_rss_bytes,omitempty"`
	NewShimAnonRSS int64 `json:"new_shim_anon_rss_bytes,omitempty"`

	Dump     *DumpStats    `json:"criu_dump,omitempty"`
	Restored *RestoreStats `json:"criu_restore,omitempty"`
	// Ckpt is ckpt's own account of the checkpoint (ckpt.json timings).
	Ckpt *CkptTimings `json:"ckpt,omitempty"`
	Err  string       `json:"error,omitempty"`
}

// RPCTimes are the durations of the task service calls behind a
// checkpoint and a restore, measured at the client's gRPC connection.
type RPCTimes struct {
	Pause      time.Duration `json:"pause_ns"`
	Checkpoint time.Duration `json:"checkpoint_ns"`
	Resume     time.Duration `json:"resume_ns"`
	Create     time.Duration `json:"create_ns"`
	Start      time.Duration `json:"start_ns"`
}

// CkptTimings are the spans ckpt records in ckpt.json, in milliseconds.
type CkptTimings struct {
	TotalMs            int64 `json:"total_ms"`
	DumpMs             int64 `json:"dump_ms"`
	FreezeToPostDumpMs int64 `json:"freeze_to_post_dump_ms"`
}

// DumpStats are CRIU's own dump figures (stats-dump), in microseconds.
type DumpStats struct {
	Freezing, Frozen, Memdump, Memwrite uint32
	PagesWritten                        uint64
}

// RestoreStats are CRIU's restore figures (stats-restore), in
// microseconds.
type RestoreStats struct {
	Forking, Restore uint32
	PagesRestored    uint64
}

// readStats reads the statistics CRIU leaves in an image dir, if any.
func readStats(dir string) (*DumpStats, *RestoreStats) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, nil
	}
	defer f.Close()
	var d *DumpStats
	var r *RestoreStats
	if s, err := stats.CriuGetDumpStats(f); err == nil {
		d = &DumpStats{s.GetFreezingTime(), s.GetFrozenTime(), s.GetMemdumpTime(), s.GetMemwriteTime(), s.GetPagesWritten()}
	}
	if s, err := stats.CriuGetRestoreStats(f); err == nil {
		r = &RestoreStats{s.GetForkingTime(), s.GetRestoreTime(), s.GetPagesRestored()}
	}
	return d, r
}

// dirSize is the size of the regular files under dir, CRIU's logs
// excluded: they depend on the log level, not on the checkpoint.
func dirSize(dir string) int64 {
	var n int64
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && filepath.Ext(p) != ".log" {
			n += fi.Size()
		}
		return nil
	})
	return n
}

// Spread is min, median and max of a figure over repetitions.
type Spread struct {
	Min, Median, Max float64
	N                int
}

func spread(v []float64) Spread {
	if len(v) == 0 {
		return Spread{}
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Spread{Min: s[0], Median: m, Max: s[len(s)-1], N: len(s)}
}
