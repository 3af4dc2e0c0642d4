package image

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// pagemapImage builds a pagemap image: head pages_id, then one entry per
// {pages, flags}; compat writes the count in the old field.
func pagemapImage(id uint64, entries [][2]uint64, compat bool) []byte {
	b := binary.LittleEndian.AppendUint32(nil, imgCommonMagic)
	b = binary.LittleEndian.AppendUint32(b, pagemapMagic)
	entry := func(m []byte) {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(m)))
		b = append(b, m...)
	}
	var head []byte
	head = protowire.AppendTag(head, 1, protowire.VarintType)
	entry(protowire.AppendVarint(head, id))
	for i, e := range entries {
		var m []byte
		m = protowire.AppendTag(m, 1, protowire.VarintType)
		m = protowire.AppendVarint(m, uint64(0x400000+i*0x10000))
		m = protowire.AppendTag(m, 2, protowire.VarintType)
		if compat {
			m = protowire.AppendVarint(m, e[0])
		} else {
			m = protowire.AppendVarint(m, 0)
			m = protowire.AppendTag(m, 5, protowire.VarintType)
			m = protowire.AppendVarint(m, e[0])
		}
		m = protowire.AppendTag(m, 4, protowire.VarintType)
		m = protowire.AppendVarint(m, e[1])
		entry(m)
	}
	return b
}

func TestCheckPages(t *testing.T) {
	page := int64(os.Getpagesize())
	cases := []struct {
		name    string
		pagemap []byte
		pages   int64 // size of pages-1.img in pages; -1: no file
		extra   int64 // bytes added
		want    []string
	}{
		{"intact", pagemapImage(1, [][2]uint64{{1, 4}, {5, 6}, {3, pageInParent}}, false), 6, 0, nil},
		{"intact, old format", pagemapImage(1, [][2]uint64{{2, 4}}, true), 2, 0, nil},
		{"nothing present, no file", pagemapImage(1, [][2]uint64{{3, pageInParent}}, false), -1, 0, nil},
		{"truncated", pagemapImage(1, [][2]uint64{{1, 4}, {5, 6}}, false), 1, 904, []string{"pages-1.img is 5000 bytes", "pagemap-1.img lists 6 pages", "truncated"}},
		{"too long", pagemapImage(1, [][2]uint64{{1, 4}}, false), 2, 0, []string{"pages-1.img is 8192 bytes"}},
		{"missing", pagemapImage(1, [][2]uint64{{1, 4}}, false), -1, 0, []string{"lists 1 pages in pages-1.img", "no such file"}},
		{"bad magic", []byte("not a pagemap at all"), 0, 0, []string{"pagemap-1.img", "bad magic"}},
		{"cut entry", pagemapImage(1, [][2]uint64{{1, 4}}, false)[:20], 0, 0, []string{"truncated"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, "pagemap-1.img"), tc.pagemap, 0o600)
			if tc.pages >= 0 {
				os.WriteFile(filepath.Join(dir, "pages-1.img"), make([]byte, tc.pages*page+tc.extra), 0o600)
			}
			d, err := os.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			err = CheckPages(d)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("damaged image accepted")
			}
			for _, w := range append(tc.want, dir) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q lacks %q", err, w)
				}
			}
		})
	}
}
