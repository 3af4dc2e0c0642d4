package image

import (
	"errors"
	"os"
	"sort"
)

// File is one entry of an image dir.
type File struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
	// Kind is "file", "dir", "symlink" or "other".
	Kind string `json:"kind"`
}

// Info is what `ckpt inspect` shows about an image dir.
type Info struct {
	Dir string `json:"dir"`
	// Complete is false without a readable ckpt.json.
	Complete bool      `json:"complete"`
	Problem  string    `json:"problem,omitempty"`
	Metadata *Metadata `json:"metadata,omitempty"`
	// Descriptors is descriptors.json, when valid.
	Descriptors []string `json:"descriptors,omitempty"`
	Files       []File   `json:"files"`
	TotalSize   int64    `json:"total_size"`
}

// Inspect describes the image dir at path. Only a missing or unreadable
// dir is an error; a broken checkpoint is described in Info.Problem.
func Inspect(path string) (*Info, error) {
	d, err := openDir(path)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	info := &Info{Dir: path}
	entries, err := d.ReadDir(-1)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		f := File{Name: e.Name(), Kind: "other"}
		switch t := e.Type(); {
		case t.IsRegular():
			f.Kind = "file"
		case t.IsDir():
			f.Kind = "dir"
		case t&os.ModeSymlink != 0:
			f.Kind = "symlink"
		}
		if fi, err := e.Info(); err == nil && f.Kind == "file" {
			f.Size = fi.Size()
			info.TotalSize += f.Size
		}
		info.Files = append(info.Files, f)
	}
	sort.Slice(info.Files, func(i, j int) bool { return info.Files[i].Name < info.Files[j].Name })

	md, err := ReadMetadata(d)
	switch {
	case err == nil:
		info.Metadata, info.Complete = md, true
	case errors.Is(err, ErrNoMetadata):
		info.Problem = ErrNoMetadata.Error()
	default:
		info.Problem = err.Error()
	}
	if desc, err := ReadDescriptors(d); err == nil {
		info.Descriptors = desc
	} else if info.Problem == "" && !errors.Is(err, os.ErrNotExist) {
		info.Problem = err.Error()
	}
	return info, nil
}
