package api

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"testing"

	"github.com/gantry-ml/gantry"
)

func (f *fakeService) Outputs(ctx context.Context, id string) (*gantry.Outputs, error) {
	if f.outputs == nil {
		return nil, errUnexpected
	}
	return f.outputs(ctx, id)
}

func (f *fakeService) WriteOutputs(ctx context.Context, id string, w io.Writer) error {
	if f.writeOutputs == nil {
		return errUnexpected
	}
	return f.writeOutputs(ctx, id, w)
}

// outputsService serves job "done" with one file, "model.bin"; "running"
// has not finished training; other jobs are unknown. broken, when set,
// breaks the stream off after the file as a digest mismatch does.
func outputsService(broken bool) *fakeService {
	outs := &gantry.Outputs{Dir: "/output", Files: []gantry.OutputFile{{Path: "model.bin", Size: 7, Mode: 0o644}}, Bytes: 7}
	return &fakeService{
		outputs: func(_ context.Context, id string) (*gantry.Outputs, error) {
			switch id {
			case "done":
				return outs, nil
			case "running":
				return nil, gantry.Errorf(gantry.ErrConflict, "job running is running: its outputs are copied when training ends")
			}
			return nil, gantry.Errorf(gantry.ErrNotFound, "job %s: no such job", id)
		},
		writeOutputs: func(_ context.Context, id string, w io.Writer) error {
			tw := tar.NewWriter(w)
			tw.WriteHeader(&tar.Header{Name: "model.bin", Mode: 0o644, Size: 7, Typeflag: tar.TypeReg})
			io.WriteString(tw, "weights")
			tw.Flush()
			if broken {
				return errors.New("output model.bin: the kept file's digest is not the record's")
			}
			return tw.Close()
		},
	}
}

func TestOutputsRoute(t *testing.T) {
	tests := []struct {
		id         string
		wantStatus int
		wantKind   string
	}{
		{"done", http.StatusOK, ""},
		{"running", http.StatusConflict, "conflict"},
		{"nope", http.StatusNotFound, "not_found"},
	}
	url := serveHTTP(t, outputsService(false))
	for _, tc := range tests {
		t.Run(tc.id, func(t *testing.T) {
			resp, err := http.Get(url + "/v1/jobs/" + tc.id + "/outputs")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.wantStatus)
			}
			if tc.wantStatus != http.StatusOK {
				return
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/x-tar" {
				t.Errorf("Content-Type %q, want application/x-tar", ct)
			}
			tr := tar.NewReader(resp.Body)
			hdr, err := tr.Next()
			if err != nil || hdr.Name != "model.bin" {
				t.Fatalf("first entry %v, %v; want model.bin", hdr, err)
			}
			if data, _ := io.ReadAll(tr); string(data) != "weights" {
				t.Errorf("model.bin holds %q, want weights", data)
			}
			if _, err := tr.Next(); err != io.EOF {
				t.Errorf("after the file: %v, want the end of the archive", err)
			}
		})
	}
}

// TestClientOutputs: the client maps the answers back to kinds, and a
// stream the server breaks off reads as an error, not as an archive's end.
func TestClientOutputs(t *testing.T) {
	ctx := context.Background()
	c := serveClient(t, outputsService(false))
	for id, kind := range map[string]error{"running": gantry.ErrConflict, "nope": gantry.ErrNotFound} {
		if _, err := c.Outputs(ctx, id); !errors.Is(err, kind) {
			t.Errorf("Outputs(%s) = %v, want %v", id, err, kind)
		}
	}
	rc, err := c.Outputs(ctx, "done")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	_, err = io.Copy(&buf, rc)
	rc.Close()
	if err != nil || buf.Len() == 0 {
		t.Errorf("reading the outputs: %d bytes, %v; want the archive", buf.Len(), err)
	}

	broken := serveClient(t, outputsService(true))
	rc, err = broken.Outputs(ctx, "done")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := io.Copy(io.Discard, rc); err == nil {
		t.Errorf("reading a stream broken off: no error, want one")
	}
}
