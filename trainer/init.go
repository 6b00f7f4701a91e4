package trainer

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unicode"

	"github.com/gantry-ml/gantry"
)

// A file whose name starts with a dot is embedded only when named.
//
//go:embed iris/app.py iris/gantry_metrics.py iris/requirements.txt iris/Dockerfile iris/.dockerignore
var iris embed.FS

// defaultBase is the Dockerfile's line that names the base image.
const defaultBase = "ARG BASE=python:3.10-slim"

// Files returns the reference Iris trainer, file name to content: app.py,
// requirements.txt, a Dockerfile, a .dockerignore, and gantry_metrics.py,
// the helper a program imports to report a metric as a structured line
// (log_metric(name, value, step=None)). With base
// "" the Dockerfile keeps its default base image, python:3.10-slim, which
// installs requirements.txt from the network; any other base replaces it
// there, such as an image that already has scikit-learn, pandas and joblib
// and so builds offline. Files puts base into the Dockerfile as it is; Write
// checks it.
func Files(base string) map[string][]byte {
	entries, err := iris.ReadDir("iris")
	if err != nil {
		panic(err) // the directory is embedded: it cannot be missing
	}
	files := make(map[string][]byte, len(entries))
	for _, e := range entries {
		b, err := iris.ReadFile("iris/" + e.Name())
		if err != nil {
			panic(err)
		}
		files[e.Name()] = b
	}
	if base != "" {
		d := string(files["Dockerfile"])
		files["Dockerfile"] = []byte(strings.Replace(d, defaultBase+"\n", "ARG BASE="+base+"\n", 1))
	}
	return files
}

// Write writes the reference Iris trainer (see Files) into dir, creating dir
// and its parents as needed. It returns an error of kind gantry.ErrConflict
// when one of the files is already there, and of kind gantry.ErrInvalid when
// base is not a plausible image reference. Other failures are the file
// system's errors, of no kind. Whenever it fails, it leaves no file of its
// own behind.
func Write(dir, base string) error {
	if base != "" && (strings.ContainsFunc(base, badInBase) || strings.HasPrefix(base, "-")) {
		return gantry.Errorf(gantry.ErrInvalid, "base image %q: not an image reference", base)
	}
	files := Files(base)
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		path := filepath.Join(dir, name)
		_, err := os.Lstat(path)
		if err == nil {
			return gantry.Errorf(gantry.ErrConflict, "%s already exists; nothing was written", path)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("check %s: %w", path, err)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	var written []string
	for _, name := range names {
		path := filepath.Join(dir, name)
		err := writeNew(path, files[name])
		if err != nil {
			for _, w := range written {
				os.Remove(w)
			}
			if errors.Is(err, fs.ErrExist) {
				// Created since the check above.
				return gantry.Errorf(gantry.ErrConflict, "%s already exists; nothing was written", path)
			}
			return err // an *fs.PathError: it names the file
		}
		written = append(written, path)
	}
	return nil
}

// badInBase reports whether r may not be in a base image reference: a space
// or a control character would let base add lines to the Dockerfile.
func badInBase(r rune) bool {
	return r == ' ' || !unicode.IsPrint(r)
}

// writeNew writes a file that must not exist yet: O_EXCL, so that a file
// made by someone else between the check and the write is never overwritten.
func writeNew(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return err
	}
	return nil
}
