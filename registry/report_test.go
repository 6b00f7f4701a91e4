package registry

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/gantry-ml/gantry"
)

// lines is a Reporter that writes each line, and each progress record as a
// line, to w.
type lines struct{ w io.Writer }

func (l lines) Linef(format string, args ...any) { fmt.Fprintf(l.w, format+"\n", args...) }
func (l lines) Progress(p gantry.Progress) {
	fmt.Fprintf(l.w, "progress %s %d/%d %s\n", p.Ref, p.Current, p.Total, p.Digest)
}

// records keeps the typed progress a push reports.
type records struct {
	mu  sync.Mutex
	got []gantry.Progress
}

func (r *records) Linef(string, ...any) {}
func (r *records) Progress(p gantry.Progress) {
	r.mu.Lock()
	r.got = append(r.got, p)
	r.mu.Unlock()
}

// TestPushReportsTypedProgress: a push's progress comes as typed records,
// each reference's last one whole and with the digest the registry serves;
// nobody parses it out of text.
func TestPushReportsTypedProgress(t *testing.T) {
	host := newRegistry(t, nil)
	img, err := random.Image(4096, 2)
	if err != nil {
		t.Fatal(err)
	}
	refs := []string{host + "/iris:v1", host + "/iris:v2"}
	var rec records
	pushes, err := New(WithKeychain(authn.NewMultiKeychain())).Push(context.Background(), img, refs, &rec)
	if err != nil {
		t.Fatalf("Push: %v", err)
	}
	for i, p := range pushes {
		var last *gantry.Progress
		for j := range rec.got {
			if rec.got[j].Ref == p.Ref {
				last = &rec.got[j]
			}
		}
		if last == nil || last.Digest != p.Digest || last.Current != last.Total || last.Total <= 0 {
			t.Errorf("push %d (%s): last progress %+v, want a whole one with digest %s", i, p.Ref, last, p.Digest)
		}
		if !strings.HasPrefix(p.Ref, host) {
			t.Errorf("push %d: ref %q", i, p.Ref)
		}
	}
}
