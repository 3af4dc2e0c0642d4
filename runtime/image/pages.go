package image

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protowire"
)

// CRIU restores memory from pages-ID.img, raw pages whose count the
// pagemap images give. Given a pages image shorter than its pagemap says,
// CRIU 4.2.1's restorer loops forever ("Advanced iov 0 bytes") and fills
// the disk with its log. CheckPages compares the sizes before CRIU runs:
// a few small reads and one stat per pages image.

// The pagemap image's layout (CRIU's images/pagemap.proto): two magics,
// then protobuf entries, each after its 32-bit little-endian length: a
// PagemapHead {pages_id = 1}, then PagemapEntry {vaddr = 1,
// compat_nr_pages = 2, in_parent = 3, flags = 4, nr_pages = 5}; CRIU 4
// writes nr_pages and 0 in compat_nr_pages.
const (
	imgCommonMagic = 0x54564319
	pagemapMagic   = 0x56084025
	// PagemapEntry flags: in the parent image, lazy, present in this one.
	pageInParent = 1 << 0
	pagePresent  = 1 << 2
	// maxPagemap bounds what a pagemap image may make ckpt read.
	maxPagemap = 64 << 20
)

// CheckPages checks that each pages image of the image dir open as dir
// holds exactly the pages its pagemap image says are present in it. The
// error names the file, and the sizes expected and found.
func CheckPages(dir *os.File) error {
	names, err := dirNames(dir)
	if err != nil {
		return fmt.Errorf("image %s: %w", dir.Name(), err)
	}
	page := int64(os.Getpagesize())
	for _, n := range names {
		if !strings.HasPrefix(n, "pagemap-") || !strings.HasSuffix(n, ".img") {
			continue
		}
		data, err := readFileAt(dir, n, maxPagemap)
		if err != nil {
			return fmt.Errorf("image %s: %w", dir.Name(), err)
		}
		id, pages, err := parsePagemap(data)
		if err != nil {
			return fmt.Errorf("image %s: %s: %w", dir.Name(), n, err)
		}
		pagesName := fmt.Sprintf("pages-%d.img", id)
		var st unix.Stat_t
		err = unix.Fstatat(int(dir.Fd()), pagesName, &st, unix.AT_SYMLINK_NOFOLLOW)
		switch {
		case errors.Is(err, unix.ENOENT) && pages == 0:
			continue
		case err != nil:
			return fmt.Errorf("image %s: %s lists %d pages in %s: %w", dir.Name(), n, pages, pagesName, err)
		case st.Mode&unix.S_IFMT != unix.S_IFREG:
			return fmt.Errorf("image %s: %s is not a regular file", dir.Name(), pagesName)
		case st.Size != pages*page:
			return fmt.Errorf("image %s: %s is %d bytes, but %s lists %d pages in it (%d bytes): the image is damaged (truncated?)",
				dir.Name(), pagesName, st.Size, n, pages, pages*page)
		}
	}
	return nil
}

func dirNames(dir *os.File) ([]string, error) {
	// A second descriptor: reading dir's own would move its offset.
	d, err := os.Open(fmt.Sprintf("/proc/self/fd/%d", dir.Fd()))
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.Readdirnames(-1)
}

// parsePagemap returns the pages image id and how many pages are in it.
func parsePagemap(b []byte) (id uint64, pages int64, err error) {
	if len(b) < 8 || binary.LittleEndian.Uint32(b) != imgCommonMagic || binary.LittleEndian.Uint32(b[4:]) != pagemapMagic {
		return 0, 0, errors.New("not a CRIU pagemap image (bad magic)")
	}
	b = b[8:]
	first := true
	for len(b) > 0 {
		if len(b) < 4 {
			return 0, 0, errors.New("truncated entry length")
		}
		n := int(binary.LittleEndian.Uint32(b))
		b = b[4:]
		if n > len(b) {
			return 0, 0, fmt.Errorf("entry of %d bytes, %d left: truncated", n, len(b))
		}
		fields, err := varints(b[:n])
		if err != nil {
			return 0, 0, err
		}
		b = b[n:]
		if first {
			id, first = fields[1], false
			continue
		}
		flags, ok := fields[4]
		if !ok {
			// Images older than the flags field: in_parent or present.
			flags = pagePresent
			if fields[3] != 0 {
				flags = pageInParent
			}
		}
		nr, ok := fields[5]
		if !ok {
			nr = fields[2]
		}
		if flags&pagePresent != 0 {
			pages += int64(nr)
		}
	}
	if first {
		return 0, 0, errors.New("no pagemap head")
	}
	return id, pages, nil
}

// varints decodes a protobuf message whose fields are all varints.
func varints(b []byte) (map[protowire.Number]uint64, error) {
	out := map[protowire.Number]uint64{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		b = b[n:]
		if typ != protowire.VarintType {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return nil, protowire.ParseError(n)
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeVarint(b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		out[num] = v
		b = b[n:]
	}
	return out, nil
}
