package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/sirupsen/logrus"
)

// In a VM whose balloon device takes free page reports, the guest hands
// free memory back to the host in 2 MiB blocks a few seconds after it was
// freed, and the next touch of such a block faults on the host as well.
// Every checkpoint and restore of the memory workloads frees and touches
// GiBs: here writing 2 GiB to a tmpfs took 0.6 s or 1.1-4.4 s from one run
// to the next, for every target alike, which buried the differences the
// benchmark is after. So the benchmark stops the reporting for its run
// (its order set above the largest free block the kernel can have), puts
// the setting back afterwards, and touches the memory the largest
// workload needs once before it measures, so that the host backs it
// before the first sample. A host without the module is left alone.
// -page-reporting measures with the reporting on.

// pageReportingOrder is the page_reporting module's smallest reported
// block order.
const pageReportingOrder = "/sys/module/page_reporting/parameters/page_reporting_order"

// noReportingOrder is above MAX_PAGE_ORDER (10): no free block is that
// large, so none is reported.
const noReportingOrder = "11"

// pausedMarker keeps the setting a run found until the run puts it back:
// a run killed before it could (SIGKILL) leaves it, and the next run
// restores that value instead of taking the paused one for the host's.
// Outside /run, which the benchmark may replace with a private tmpfs.
const pausedMarker = "/var/tmp/ckpt-bench-page-reporting-order"

// pausePageReporting stops free page reporting where the guest has it and
// returns what undoes it, and how the run was, for the results.
func pausePageReporting() (restore func(), state string) {
	return pauseReporting(pageReportingOrder, pausedMarker)
}

func pauseReporting(setting, marker string) (restore func(), state string) {
	old, err := os.ReadFile(setting)
	if err != nil {
		return func() {}, "no free page reporting"
	}
	was := strings.TrimSpace(string(old))
	if m, err := os.ReadFile(marker); err == nil && was == noReportingOrder {
		was = strings.TrimSpace(string(m))
		logrus.WithField("order", was).Warn("an earlier run was killed with free page reporting paused; it goes back to its old order at the end of this one")
	}
	if was == noReportingOrder {
		return func() {}, "free page reporting off"
	}
	if err := os.WriteFile(marker, []byte(was+"\n"), 0o644); err != nil {
		logrus.WithError(err).Warn("cannot record free page reporting's order; a killed run would leave it paused")
	}
	if err := os.WriteFile(setting, []byte(noReportingOrder), 0); err != nil {
		os.Remove(marker)
		logrus.WithError(err).Warn("cannot pause the VM's free page reporting; large memory figures will scatter")
		return func() {}, "free page reporting on (could not pause it)"
	}
	return func() {
		if err := os.WriteFile(setting, []byte(was), 0); err != nil {
			logrus.WithError(err).Errorf("put free page reporting back: write %s to %s by hand", was, setting)
			return
		}
		os.Remove(marker)
	}, "free page reporting paused for the run (order " + was + " -> " + noReportingOrder + ")"
}

// pageReportingState is how the run was, where the caller left the
// reporting as it is.
func pageReportingState() string {
	b, err := os.ReadFile(pageReportingOrder)
	if err != nil {
		return "no free page reporting"
	}
	return "free page reporting on (order " + strings.TrimSpace(string(b)) + ")"
}

// warmMemory writes and removes a file of mib MiB in dir, a tmpfs: the
// kernel hands those pages out again first, now backed by the host.
func warmMemory(dir string, mib int) error {
	if mib <= 0 {
		return nil
	}
	p := filepath.Join(dir, "warm")
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	defer os.Remove(p)
	defer f.Close()
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = 0x5a
	}
	for i := 0; i < mib; i++ {
		if _, err := f.Write(buf); err != nil {
			return fmt.Errorf("warm %d MiB of memory: %w", mib, err)
		}
	}
	return nil
}
