package iox

import (
	"bytes"
	"errors"
	"testing"
)

func TestSkipWriter(t *testing.T) {
	tests := []struct {
		name   string
		skip   int64
		writes []string
		want   string
	}{
		{name: "nothing to skip", skip: 0, writes: []string{"abc", "def"}, want: "abcdef"},
		{name: "inside the first write", skip: 2, writes: []string{"abc", "def"}, want: "cdef"},
		{name: "exactly the first write", skip: 3, writes: []string{"abc", "def"}, want: "def"},
		{name: "across several writes", skip: 7, writes: []string{"ab", "cd", "ef", "ghij", "k"}, want: "hijk"},
		{name: "an empty write on the way", skip: 3, writes: []string{"ab", "", "cd", ""}, want: "d"},
		{name: "more than all", skip: 100, writes: []string{"abc", "def"}, want: ""},
		{name: "exactly all", skip: 6, writes: []string{"abc", "def"}, want: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got bytes.Buffer
			w := &SkipWriter{W: &got, Skip: tc.skip}
			for _, s := range tc.writes {
				n, err := w.Write([]byte(s))
				if n != len(s) || err != nil {
					t.Fatalf("Write(%q) = %d, %v; want %d, nil", s, n, err, len(s))
				}
			}
			if got.String() != tc.want {
				t.Errorf("passed on %q, want %q", got.String(), tc.want)
			}
		})
	}

	t.Run("an error from below", func(t *testing.T) {
		errFull := errors.New("no space left on device")
		w := &SkipWriter{W: failWriter{err: errFull}, Skip: 2}
		if n, err := w.Write([]byte("ab")); n != 2 || err != nil {
			t.Errorf("Write of skipped bytes = %d, %v; want 2, nil", n, err)
		}
		if n, err := w.Write([]byte("cd")); n != 0 || !errors.Is(err, errFull) {
			t.Errorf("Write = %d, %v; want 0, %v", n, err, errFull)
		}
	})
}

// failWriter fails every write with err.
type failWriter struct{ err error }

func (w failWriter) Write(p []byte) (int, error) { return 0, w.err }
