package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ckpt-dev/ckpt/runtime/image"
	"github.com/urfave/cli/v2"
)

func init() {
	commands = append(commands, &cli.Command{
		Name:      "inspect",
		Usage:     "show a checkpoint's metadata, options, statistics and files",
		ArgsUsage: "DIR",
		Flags:     []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print as JSON"}},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return cli.Exit("ckpt inspect: want exactly one image dir", 2)
			}
			info, err := image.Inspect(c.Args().First())
			if err != nil {
				return err
			}
			if c.Bool("json") {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(info); err != nil {
					return err
				}
			} else {
				printInfo(info)
			}
			if !info.Complete {
				return cli.Exit("", 1)
			}
			return nil
		},
	})
}

func printInfo(info *image.Info) {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	defer w.Flush()
	fmt.Fprintf(w, "dir\t%s\n", info.Dir)
	if !info.Complete {
		fmt.Fprintf(w, "status\tINCOMPLETE: %s\n", info.Problem)
	} else {
		fmt.Fprintf(w, "status\tcomplete\n")
	}
	if m := info.Metadata; m != nil {
		fmt.Fprintf(w, "container\t%s\n", m.ContainerID)
		fmt.Fprintf(w, "created\t%s\n", m.Created.Format(time.RFC3339))
		fmt.Fprintf(w, "format\t%d\n", m.FormatVersion)
		fmt.Fprintf(w, "criu\t%s\n", m.CRIUVersion)
		fmt.Fprintf(w, "runc\t%s\n", m.RuncVersion)
		o := m.Options
		fmt.Fprintf(w, "options\tleave-running=%t tcp-established=%t ext-unix-sk=%t shell-job=%t file-locks=%t empty-net-ns=%t cgroups-mode=%s\n",
			o.LeaveRunning, o.TCPEstablished, o.ExtUnixSK, o.ShellJob, o.FileLocks, o.EmptyNetNS, orDefault(o.CgroupsMode))
		if o.PreDump || o.ParentPath != "" {
			fmt.Fprintf(w, "\tpre-dump=%t parent=%q\n", o.PreDump, o.ParentPath)
		}
		switch {
		case o.CRIUInNetNS:
			fmt.Fprintf(w, "\tnetwork namespace: only lo, left out (criu ran in it), made new with lo up on restore\n")
		case o.LoopbackOnly:
			fmt.Fprintf(w, "\tnetwork namespace: only lo, dumped empty, lo brought up on restore\n")
		}
		if o.ExternalNetNS || o.ExternalPidNS {
			fmt.Fprintf(w, "\texternal netns=%t pidns=%t\n", o.ExternalNetNS, o.ExternalPidNS)
		}
		for _, t := range m.FreshTmpfs {
			held := "empty"
			if len(t.Entries) > 0 {
				held = fmt.Sprintf("%d inodes, no data", len(t.Entries))
			}
			fmt.Fprintf(w, "recreated tmpfs	%s (%s; %s; %s): not archived, mounted new on restore\n", strings.Join(t.Mountpoints, ", "), t.Flags, t.Data, held)
		}
		if len(m.CgroupHierarchies) > 0 {
			fmt.Fprintf(w, "cgroup yard	%s\n", strings.Join(m.CgroupHierarchies, " "))
		}
		term := fmt.Sprint(m.Terminal)
		if m.WindowSize != nil {
			term += fmt.Sprintf(" (%dx%d)", m.WindowSize.Cols, m.WindowSize.Rows)
		}
		fmt.Fprintf(w, "terminal\t%s\n", term)
		fmt.Fprintf(w, "spec\t%s\n", m.SpecDigest)
		for _, s := range m.Stdio {
			ext := ""
			if s.External != "" {
				ext = "  (external " + s.External + ")"
			}
			fmt.Fprintf(w, "fd %d\t%s%s\n", s.Fd, s.Link, ext)
		}
		if st := m.Stats; st != nil {
			fmt.Fprintf(w, "frozen\t%s (freezing %s, memdump %s, memwrite %s)\n", us(st.FrozenTimeUs), us(st.FreezingTimeUs), us(st.MemdumpTimeUs), us(st.MemwriteTimeUs))
			fmt.Fprintf(w, "pages\t%d written, %d scanned, %d skipped (parent)\n", st.PagesWritten, st.PagesScanned, st.PagesSkippedParent)
		}
		fmt.Fprintf(w, "timings\tdump %dms, total %dms\n", m.Timings.DumpMs, m.Timings.TotalMs)
	}
	fmt.Fprintf(w, "files\t%d, %s\n", len(info.Files), size(info.TotalSize))
	for _, f := range info.Files {
		s := size(f.Size)
		if f.Kind != "file" {
			s = f.Kind
		}
		fmt.Fprintf(w, "  %s\t%s\n", f.Name, s)
	}
}

func us(v uint32) string { return (time.Duration(v) * time.Microsecond).String() }

func orDefault(s string) string {
	if s == "" {
		return "default"
	}
	return s
}

func size(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
