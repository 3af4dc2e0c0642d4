package image

import (
	"encoding/binary"
	"fmt"
	"os"

	"github.com/checkpoint-restore/go-criu/v8/stats"
)

// DumpStats are CRIU's statistics of a dump, from its stats-dump image.
// Times are in microseconds, as CRIU counts them.
type DumpStats struct {
	FreezingTimeUs     uint32 `json:"freezing_time_us"`
	FrozenTimeUs       uint32 `json:"frozen_time_us"`
	MemdumpTimeUs      uint32 `json:"memdump_time_us"`
	MemwriteTimeUs     uint32 `json:"memwrite_time_us"`
	PagesScanned       uint64 `json:"pages_scanned"`
	PagesSkippedParent uint64 `json:"pages_skipped_parent"`
	PagesWritten       uint64 `json:"pages_written"`
	PagesLazy          uint64 `json:"pages_lazy,omitempty"`
}

// maxStatsSize caps stats-dump: it holds one small protobuf message.
const maxStatsSize = 64 << 10

// ReadDumpStats decodes CRIU's stats-dump from the image dir open as dir.
// go-criu's own reader indexes the buffer without bounds checks; this one
// checks the header and the payload size first.
func ReadDumpStats(dir *os.File) (*DumpStats, error) {
	data, err := readFileAt(dir, stats.StatsDump, maxStatsSize)
	if err != nil {
		return nil, err
	}
	return ParseDumpStats(data)
}

// ParseDumpStats decodes a stats-dump image: two magics, a payload size,
// the StatsEntry protobuf.
func ParseDumpStats(data []byte) (*DumpStats, error) {
	if len(data) < stats.PayloadOffset {
		return nil, fmt.Errorf("%s: %d bytes, too short for the header", stats.StatsDump, len(data))
	}
	if m := binary.LittleEndian.Uint32(data[stats.PrimaryMagicOffset:]); m != stats.ImgServiceMagic {
		return nil, fmt.Errorf("%s: bad magic %#x", stats.StatsDump, m)
	}
	if m := binary.LittleEndian.Uint32(data[stats.SecondaryMagicOffset:]); m != stats.StatsMagic {
		return nil, fmt.Errorf("%s: bad stats magic %#x", stats.StatsDump, m)
	}
	n := uint64(binary.LittleEndian.Uint32(data[stats.SizeOffset:]))
	if n > uint64(len(data)-stats.PayloadOffset) {
		return nil, fmt.Errorf("%s: payload of %d bytes, only %d present", stats.StatsDump, n, len(data)-stats.PayloadOffset)
	}
	var e stats.StatsEntry
	if err := e.UnmarshalVT(data[stats.PayloadOffset : stats.PayloadOffset+int(n)]); err != nil {
		return nil, fmt.Errorf("%s: %w", stats.StatsDump, err)
	}
	d := e.GetDump()
	if d == nil {
		return nil, fmt.Errorf("%s: no dump statistics", stats.StatsDump)
	}
	return &DumpStats{
		FreezingTimeUs: d.GetFreezingTime(), FrozenTimeUs: d.GetFrozenTime(),
		MemdumpTimeUs: d.GetMemdumpTime(), MemwriteTimeUs: d.GetMemwriteTime(),
		PagesScanned: d.GetPagesScanned(), PagesSkippedParent: d.GetPagesSkippedParent(),
		PagesWritten: d.GetPagesWritten(), PagesLazy: d.GetPagesLazy(),
	}, nil
}
