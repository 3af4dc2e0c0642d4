package image

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// DescriptorsFile is runc's name for the init's stdio links in the image
// dir; ckpt keeps runc's name and format so images stay interchangeable.
const DescriptorsFile = "descriptors.json"

// MaxDescriptorsSize caps descriptors.json: three paths fit in far less.
const MaxDescriptorsSize = 1 << 20

// WriteDescriptors writes the init's fd 0-2 link targets.
func WriteDescriptors(dir string, links []string) error {
	if len(links) != 3 {
		return fmt.Errorf("descriptors: want 3 links, got %d", len(links))
	}
	data, err := json.Marshal(links)
	if err != nil {
		return err
	}
	return writeFileAtomic(dir, DescriptorsFile, data, 0o600)
}

// ReadDescriptors reads and validates descriptors.json from the image dir
// open as dir: a regular file (not a symlink, FIFO or device), at most
// MaxDescriptorsSize bytes, holding a JSON array of exactly three strings.
func ReadDescriptors(dir *os.File) ([]string, error) {
	data, err := readFileAt(dir, DescriptorsFile, MaxDescriptorsSize)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", dir.Name(), err)
	}
	return ParseDescriptors(data)
}

// ParseDescriptors validates descriptors.json's content.
func ParseDescriptors(data []byte) ([]string, error) {
	var raw []json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("%s: not a JSON array: %w", DescriptorsFile, err)
	}
	if len(raw) != 3 {
		return nil, fmt.Errorf("%s: want exactly 3 entries (fds 0-2), got %d", DescriptorsFile, len(raw))
	}
	links := make([]string, 3)
	for i, r := range raw {
		if err := json.Unmarshal(r, &links[i]); err != nil {
			return nil, fmt.Errorf("%s: entry %d is not a string", DescriptorsFile, i)
		}
		if strings.ContainsRune(links[i], 0) || len(links[i]) > 4096 {
			return nil, fmt.Errorf("%s: entry %d is not a valid link", DescriptorsFile, i)
		}
	}
	return links, nil
}

// IsPipe reports whether a descriptor link names a pipe ("pipe:[123]"),
// which restore hands to CRIU as inherit_fd.
func IsPipe(link string) bool { return strings.HasPrefix(link, "pipe:[") }
