// gantry outputs: the files a job's training left in its output directory,
// listed, or written out.

package main

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/gantry-ml/gantry"
	"github.com/gantry-ml/gantry/api"
)

func outputsCmd(g *globals) *cobra.Command {
	var (
		out   string
		force bool
	)
	c := &cobra.Command{
		Use:   "outputs JOB [-o DIR]",
		Short: "List the files a job's training left in its output directory, or write them out",
		Long: `Without -o, outputs lists the files a job kept of what its training wrote to its
output directory (GANTRY_OUTPUT_DIR, /output unless the job said otherwise):
path, size and sha256 digest. With -o DIR it writes them under DIR (made if
missing), each checked against the digest the job's record lists; a file
already in DIR is not overwritten unless --force. With -o - it writes them to
stdout as a tar stream.`,
		Args: exactArgs(1),
		RunE: g.withClient(func(c *cobra.Command, args []string, cl *api.Client) error {
			j, err := cl.Get(c.Context(), args[0])
			if err != nil {
				return err
			}
			outs, err := j.KeptOutputs()
			if err != nil {
				return err
			}
			summary := fmt.Sprintf("%d files, %s", len(outs.Files), sizeString(outs.Bytes))
			if out == "" {
				fmt.Fprintf(c.ErrOrStderr(), "%s in %s\n", summary, outs.Dir)
				return listOutputs(c.OutOrStdout(), outs.Files)
			}
			rc, err := cl.Outputs(c.Context(), j.ID)
			if err != nil {
				return err
			}
			defer rc.Close()
			if out == "-" {
				if _, err := io.Copy(c.OutOrStdout(), rc); err != nil {
					return fmt.Errorf("outputs of job %s: %w", j.ID, err)
				}
				fmt.Fprintf(c.ErrOrStderr(), "%s, written to stdout\n", summary)
				return nil
			}
			if err := extractOutputs(rc, out, outs.Files, force); err != nil {
				return err
			}
			fmt.Fprintf(c.ErrOrStderr(), "%s, written to %s\n", summary, out)
			return nil
		}),
	}
	c.Flags().StringVarP(&out, "output", "o", "", "write the files under this directory (- : a tar stream to stdout)")
	c.Flags().BoolVar(&force, "force", false, "with -o DIR, overwrite files already there")
	return c
}

// listOutputs writes the table of files.
func listOutputs(w io.Writer, files []gantry.OutputFile) error {
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "PATH\tSIZE\tDIGEST")
	for _, f := range files {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", f.Path, sizeString(f.Size), f.Digest)
	}
	return tw.Flush()
}

// sizeString writes n bytes for people: "512b", "12.3k", "1.5g".
func sizeString(n int64) string {
	for _, u := range []struct {
		unit string
		size int64
	}{{"g", 1 << 30}, {"m", 1 << 20}, {"k", 1 << 10}} {
		if n >= u.size {
			return strings.TrimSuffix(strconv.FormatFloat(float64(n)/float64(u.size), 'f', 1, 64), ".0") + u.unit
		}
	}
	return fmt.Sprintf("%db", n)
}

// extractOutputs writes the files of the tar stream r under dir (made if
// missing): only those the record lists (files), each checked against its
// size and digest before it takes its name. An entry that would land
// outside dir (absolute, "..", through a symlink in dir) is refused, and so
// is a file already there unless force.
func extractOutputs(r io.Reader, dir string, files []gantry.OutputFile, force bool) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	want := make(map[string]gantry.OutputFile, len(files))
	for _, f := range files {
		want[f.Path] = f
	}
	written := 0
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read the outputs: %w", err)
		}
		name := strings.TrimSuffix(hdr.Name, "/")
		if !filepath.IsLocal(name) || path.Clean(name) != name {
			return fmt.Errorf("the outputs hold an entry %q that would land outside %s: refused", hdr.Name, dir)
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(name, 0o755); err != nil {
				return fmt.Errorf("%s: %w", filepath.Join(dir, name), err)
			}
			continue
		case tar.TypeReg:
		default:
			return fmt.Errorf("the outputs hold %q, not a file: refused", hdr.Name)
		}
		f, ok := want[name]
		if !ok || hdr.Size != f.Size {
			return fmt.Errorf("the outputs hold %q (%d bytes), which the job's record does not list: refused", hdr.Name, hdr.Size)
		}
		if err := writeOutput(root, dir, f, tr, force); err != nil {
			return err
		}
		written++
	}
	if written != len(files) {
		return fmt.Errorf("the outputs held %d of the %d files the job's record lists", written, len(files))
	}
	return nil
}

// writeOutput writes file f from r under root: to a temporary name beside
// it, then, its digest checked, to its own.
func writeOutput(root *os.Root, dir string, f gantry.OutputFile, r io.Reader, force bool) error {
	shown := filepath.Join(dir, f.Path)
	if !force {
		if _, err := root.Lstat(f.Path); err == nil {
			return fmt.Errorf("%s exists: remove it, or pass --force to overwrite", shown)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	if d := path.Dir(f.Path); d != "." {
		if err := root.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("%s: %w", shown, err)
		}
	}
	tmp := path.Join(path.Dir(f.Path), ".gantry-"+path.Base(f.Path)+".part")
	root.Remove(tmp) // left by an earlier run that was stopped
	w, err := root.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, fs.FileMode(f.Mode&0o777))
	if err != nil {
		return fmt.Errorf("%s: %w", shown, err)
	}
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(w, h), r)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); err == nil && got != f.Digest {
		err = fmt.Errorf("its digest is %s, the job's record says %s: not written", got, f.Digest)
	}
	if err == nil {
		err = root.Rename(tmp, f.Path)
	}
	if err == nil { // as recorded, whatever the umask
		return root.Chmod(f.Path, fs.FileMode(f.Mode&0o777))
	}
	if err != nil {
		root.Remove(tmp)
		return fmt.Errorf("%s: %w", shown, err)
	}
	return nil
}
