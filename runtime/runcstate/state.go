package runcstate

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	securejoin "github.com/cyphar/filepath-securejoin"
	"github.com/opencontainers/runc/libcontainer"
)

// StateFile is the name of runc's state file inside a container's state dir.
const StateFile = "state.json"

// ErrNotExist is returned when runc has no state for the container.
var ErrNotExist = errors.New("container does not exist")

// ValidateID applies runc's rule for container ids (letters, digits and
// _+-.), so an id can never name a path outside the root.
func ValidateID(id string) error {
	if id == "" || id == "." || id == ".." {
		return fmt.Errorf("invalid container id %q", id)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '+', c == '-', c == '.':
		default:
			return fmt.Errorf("invalid container id %q: only letters, digits and _+-. are allowed", id)
		}
	}
	return nil
}

// Dir is the container's state dir under runc's root.
func Dir(root, id string) (string, error) {
	if root == "" {
		return "", errors.New("runc root dir not set")
	}
	if err := ValidateID(id); err != nil {
		return "", err
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return "", err
	}
	return securejoin.SecureJoin(abs, id)
}

// Load reads the state runc keeps for container id under root.
func Load(root, id string) (*libcontainer.State, string, error) {
	dir, err := Dir(root, id)
	if err != nil {
		return nil, "", err
	}
	data, err := os.ReadFile(filepath.Join(dir, StateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, dir, fmt.Errorf("container %q under %s: %w", id, root, ErrNotExist)
	}
	if err != nil {
		return nil, dir, err
	}
	var st libcontainer.State
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, dir, fmt.Errorf("parse runc state of %q: %w", id, err)
	}
	if st.Config.Cgroups == nil {
		return nil, dir, fmt.Errorf("runc state of %q has no cgroup config", id)
	}
	return &st, dir, nil
}

// Save writes st as dir's state.json the way runc does: a temp file in the
// same dir renamed over the old one, so runc never reads half a file.
func Save(dir string, st *libcontainer.State) (retErr error) {
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "state-")
	if err != nil {
		return err
	}
	defer func() {
		if retErr != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), filepath.Join(dir, StateFile))
}
