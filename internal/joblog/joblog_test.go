package joblog

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// A write to a Writer: gantryd's line (own), gantryd's text (ownText, e.g.
// push progress), or a build's or trainer's output.
type write struct {
	kind string // "line", "own", "output"
	s    string
}

func TestWriter(t *testing.T) {
	tests := []struct {
		name    string
		atStart bool
		writes  []write
		want    string
	}{
		{
			name:    "gantryd's lines are marked",
			atStart: true,
			writes:  []write{{"line", "==> building x"}, {"output", "step 1\n"}, {"line", "==> succeeded"}},
			want:    "\x1e==> building x\nstep 1\n\x1e==> succeeded\n",
		},
		{
			name:    "a mark in the output is stored as visible text",
			atStart: true,
			writes:  []write{{"output", "\x1e==> succeeded\nok \x1e\x1e\n"}},
			want:    `\x1e==> succeeded` + "\n" + `ok \x1e\x1e` + "\n",
		},
		{
			name:    "the old marker text printed by a trainer stays unmarked",
			atStart: true,
			writes:  []write{{"output", "==> training in container 0123456789ab\n"}},
			want:    "==> training in container 0123456789ab\n",
		},
		{
			name:    "a line of gantryd's after output with no newline starts a line",
			atStart: true,
			writes:  []write{{"output", "Epoch 2/3 lo"}, {"line", "==> lost the engine"}, {"output", "ss\n"}},
			want:    "Epoch 2/3 lo\n\x1e==> lost the engine\nss\n",
		},
		{
			name:    "a log left mid-line is ended first",
			atStart: false,
			writes:  []write{{"line", "==> training in container c"}},
			want:    "\n\x1e==> training in container c\n",
		},
		{
			name:    "each line of gantryd's text is marked, across writes",
			atStart: true,
			writes:  []write{{"own", "pushing: 1 of 2 [1/2]\npushing: 2"}, {"own", " of 2 [2/2]\npushed r@d\n"}},
			want:    "\x1epushing: 1 of 2 [1/2]\n\x1epushing: 2 of 2 [2/2]\n\x1epushed r@d\n",
		},
		{
			name:    "output never continues a line of gantryd's",
			atStart: true,
			writes:  []write{{"own", "pushing: 1"}, {"output", "==> succeeded\n"}},
			want:    "\x1epushing: 1\n==> succeeded\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			notified := 0
			w := NewWriter(&buf, tt.atStart, func() { notified++ })
			for _, wr := range tt.writes {
				var err error
				switch wr.kind {
				case "line":
					err = w.Linef("%s", wr.s)
				case "own":
					_, err = io.WriteString(w.Own(), wr.s)
				case "output":
					_, err = io.WriteString(w.Output(), wr.s)
				}
				if err != nil {
					t.Fatalf("write %q: %v", wr.s, err)
				}
			}
			if got := buf.String(); got != tt.want {
				t.Errorf("log\n got %q\nwant %q", got, tt.want)
			}
			if notified != len(tt.writes) {
				t.Errorf("notified %d times, want once a write (%d)", notified, len(tt.writes))
			}
			// Only gantryd's lines read as its own.
			for _, l := range strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n") {
				if _, own := Own(l); own && !strings.HasPrefix(l, string(Mark)) {
					t.Errorf("Own(%q) = true for an unmarked line", l)
				}
			}
		})
	}
}

// Output the Writer could not store is an error, reported to the writer.
func TestWriterError(t *testing.T) {
	w := NewWriter(failWriter{}, true, nil)
	if _, err := w.Output().Write([]byte("x\n")); err == nil {
		t.Error("Output().Write on a failing file: nil error")
	}
	if err := w.Linef("==> x"); err == nil {
		t.Error("Linef on a failing file: nil error")
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestOwn(t *testing.T) {
	tests := []struct {
		line, rest string
		own        bool
	}{
		{"\x1e==> succeeded", "==> succeeded", true},
		{"==> succeeded", "==> succeeded", false},
		{`\x1e==> succeeded`, `\x1e==> succeeded`, false},
		{" \x1e==> succeeded", " \x1e==> succeeded", false},
		{"\x1epushing: 1 of 2 [1/2]", "pushing: 1 of 2 [1/2]", true},
	}
	for _, tt := range tests {
		rest, own := Own(tt.line)
		if rest != tt.rest || own != tt.own {
			t.Errorf("Own(%q) = %q, %v; want %q, %v", tt.line, rest, own, tt.rest, tt.own)
		}
	}
}
