package main

import (
	"reflect"
	"time"

	"github.com/ckpt-dev/ckpt/runtime/migrate"
)

// Post-copy through containerd is being added to runtime/migrate while
// this benchmark is written: Config.PageServer (HOST:PORT the source's
// page server binds) and Result.Total (checkpoint request -> every page on
// the target, source deleted) do not exist yet. These two helpers reach
// them by name, so that the benchmark builds against today's package and
// uses the fields as soon as they land, without an edit here. Once they
// exist, replace both with plain field accesses.

// setPageServer sets cfg.PageServer, and says whether the field exists.
func setPageServer(cfg *migrate.Config, addr string) bool {
	f := reflect.ValueOf(cfg).Elem().FieldByName("PageServer")
	if !f.IsValid() || f.Kind() != reflect.String || !f.CanSet() {
		return false
	}
	f.SetString(addr)
	return true
}

// resultTotal is res.Total where Run reports it; otherwise ran, the time
// Run took until it returned, which it does only after the source is
// deleted: that span also holds connecting and the preflight, a few ms
// before the checkpoint request.
func resultTotal(res migrate.Result, ran time.Duration) (time.Duration, bool) {
	f := reflect.ValueOf(res).FieldByName("Total")
	if f.IsValid() && f.Type() == reflect.TypeFor[time.Duration]() {
		if d := time.Duration(f.Int()); d > 0 {
			return d, true
		}
	}
	return ran, false
}
