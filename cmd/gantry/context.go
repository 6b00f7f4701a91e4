// The build context: where the Dockerfile is in it, and the tar archive of
// it that gantry submit sends, as its .dockerignore has it.

package main

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// dockerfileInContext returns the Dockerfile's path inside the context dir.
// f is the -f flag as given: relative to the current directory, like docker
// build's; "" means dir/Dockerfile.
func dockerfileInContext(dir, f string) (string, error) {
	if f == "" {
		return "Dockerfile", nil
	}
	absDir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	absF, err := filepath.Abs(f)
	if err != nil {
		return "", err
	}
	rel, err := filepath.Rel(absDir, absF)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", fmt.Errorf("the Dockerfile %s must be inside the build context %s", f, dir)
	}
	if rel == "." {
		return "", fmt.Errorf("-f %s names the build context itself, not a Dockerfile in it", f)
	}
	return filepath.ToSlash(rel), nil
}

// tarContext streams dir as a tar archive, leaving out what its .dockerignore
// excludes (but never the Dockerfile or the .dockerignore itself, as docker
// build does). Errors while walking end the stream with that error.
func tarContext(dir, dockerfile string) (io.ReadCloser, error) {
	if dockerfile == "" {
		dockerfile = "Dockerfile"
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("build context: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("build context %s is not a directory", dir)
	}
	var pm *patternmatcher.PatternMatcher
	if f, err := os.Open(filepath.Join(dir, ".dockerignore")); err == nil {
		patterns, err := ignorefile.ReadAll(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf(".dockerignore: %w", err)
		}
		// As docker build does: the build always needs these two.
		patterns = append(patterns, "!"+dockerfile, "!.dockerignore")
		if pm, err = patternmatcher.New(patterns); err != nil {
			return nil, fmt.Errorf(".dockerignore: %w", err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf(".dockerignore: %w", err)
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeTar(pw, dir, pm)) }()
	return pr, nil
}

func writeTar(w io.Writer, dir string, pm *patternmatcher.PatternMatcher) error {
	tw := tar.NewWriter(w)
	parents := map[string]patternmatcher.MatchInfo{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		if pm != nil {
			parent := parents[filepath.ToSlash(filepath.Dir(rel))]
			excluded, info, err := pm.MatchesUsingParentResults(rel, parent)
			if err != nil {
				return err
			}
			if d.IsDir() {
				parents[rel] = info
			}
			// An excluded directory may still hold re-included files ("!x").
			if excluded && (!d.IsDir() || !pm.Exclusions()) {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if excluded {
				return nil // the directory entry itself; its files are decided one by one
			}
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		h, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		h.Name = rel
		if d.IsDir() {
			h.Name += "/"
		}
		h.Uname, h.Gname = "", ""
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.CopyN(tw, f, h.Size)
			f.Close()
			if err != nil {
				return fmt.Errorf("%s: %w", rel, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("build context: %w", err)
	}
	return tw.Close()
}
