package main

import (
	"encoding/json"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/ckpt-dev/ckpt/runtime/host"
	"github.com/urfave/cli/v2"
)

func init() {
	commands = append(commands, &cli.Command{
		Name:  "check",
		Usage: "say whether this host can checkpoint and restore containers, and why not",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print the report as JSON"},
			&cli.StringFlag{Name: "containerd", Value: "containerd", Usage: "containerd binary whose version decides which clients' paths work"},
			&cli.StringFlag{Name: "containerd-config", Value: host.DefaultContainerdConfig, Usage: "containerd config to check ckpt's CRI runtime handler in"},
		},
		Action: func(c *cli.Context) error {
			r := host.Check(c.Context, c.String("criu"))
			// Optional items: they say which client path cannot work.
			r.Items = append(r.Items, host.ContainerdCheck(c.Context, c.String("containerd"), c.String("containerd-config"))...)
			if c.Bool("json") {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(r); err != nil {
					return err
				}
			} else {
				w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
				for _, it := range r.Items {
					mark := "ok"
					switch {
					case !it.OK && it.Optional:
						mark = "no (optional)"
					case !it.OK:
						mark = "FAIL"
					}
					line := it.Value
					if !it.OK {
						line = it.Reason
					}
					fmt.Fprintf(w, "%s\t%s\t%s\n", it.Name, mark, line)
				}
				w.Flush()
			}
			if !r.OK {
				return cli.Exit("ckpt: this host cannot checkpoint containers (see FAIL above)", 1)
			}
			if !c.Bool("json") {
				fmt.Println("this host can checkpoint and restore containers")
			}
			return nil
		},
	})
}
