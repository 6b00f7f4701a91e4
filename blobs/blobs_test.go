package blobs

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/pgzip"
)

// layerTar returns a tar holding one file of n random-looking bytes, and
// its digest (a diffID).
func layerTarOf(t *testing.T, seed string, n int) ([]byte, v1.Hash) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	data := bytes.Repeat([]byte(seed), n/len(seed)+1)[:n]
	if err := tw.WriteHeader(&tar.Header{Name: "model.bin", Mode: 0o644, Size: int64(n), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	tw.Write(data)
	tw.Close()
	sum := sha256.Sum256(buf.Bytes())
	return buf.Bytes(), v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
}

func opener(data []byte, opened *atomic.Int64) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) {
		opened.Add(1)
		return io.NopCloser(bytes.NewReader(data)), nil
	}
}

func TestBlobsKeepALayerCompressedOnce(t *testing.T) {
	b, err := Open(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	data, diffID := layerTarOf(t, "iris", 100_000)
	if _, ok := b.Layer(diffID); ok {
		t.Fatalf("an empty store has layer %s", diffID)
	}
	var opened atomic.Int64
	// Two pushes of images sharing the layer, at once: it is read once.
	var wg sync.WaitGroup
	descs := make([]Desc, 4)
	for i := range descs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, err := b.PutLayer(context.Background(), diffID, opener(data, &opened))
			if err != nil {
				t.Errorf("PutLayer: %v", err)
			}
			descs[i] = d
		}()
	}
	wg.Wait()
	if n := opened.Load(); n != 1 {
		t.Errorf("the layer was read %d times, want once", n)
	}
	for _, d := range descs[1:] {
		if d != descs[0] {
			t.Errorf("descriptors differ: %v and %v", d, descs[0])
		}
	}
	got, ok := b.Layer(diffID)
	if !ok || got != descs[0] {
		t.Fatalf("Layer(%s) = %v, %v; want %v", diffID, got, ok, descs[0])
	}
	if n, err := b.Size(); err != nil || n != got.Size {
		t.Errorf("Size = %d, %v; want the one blob's %d", n, err, got.Size)
	}
	// The blob is the gzip of the tar, and hashes to its digest.
	rc, err := b.Open(got.Digest)
	if err != nil {
		t.Fatal(err)
	}
	blob, _ := io.ReadAll(rc)
	rc.Close()
	if int64(len(blob)) != got.Size || sha256Hex(blob) != got.Digest.Hex {
		t.Errorf("blob of %d bytes hashing to %s; descriptor says %d bytes, %s", len(blob), sha256Hex(blob), got.Size, got.Digest)
	}
	zr, err := pgzip.NewReader(bytes.NewReader(blob))
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := io.ReadAll(zr)
	if !bytes.Equal(plain, data) {
		t.Errorf("the blob does not uncompress to the layer")
	}
}

func TestBlobsRefuseALayerThatDoesNotMatchItsDiffID(t *testing.T) {
	dir := t.TempDir()
	b, err := Open(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := layerTarOf(t, "iris", 1000)
	_, other := layerTarOf(t, "setosa", 1000)
	var opened atomic.Int64
	if _, err := b.PutLayer(context.Background(), other, opener(data, &opened)); err == nil || !strings.Contains(err.Error(), "hashes to") {
		t.Fatalf("PutLayer of a tar under another diffID: err %v, want a mismatch", err)
	}
	if _, ok := b.Layer(other); ok {
		t.Errorf("a refused layer is kept")
	}
	for _, sub := range []string{"sha256", "diffid", "tmp"} {
		if ents, _ := os.ReadDir(filepath.Join(dir, sub)); len(ents) != 0 {
			t.Errorf("%s holds %d files after a refused layer, want none", sub, len(ents))
		}
	}
	// Nor is a config whose digest is not its own.
	if err := b.PutConfig(other, []byte(`{}`)); err == nil {
		t.Errorf("PutConfig under a wrong digest succeeded")
	}
}

func TestBlobsPruneTheLeastRecentlyUsed(t *testing.T) {
	dir := t.TempDir()
	b, err := Open(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	var opened atomic.Int64
	var diffIDs []v1.Hash
	var size int64
	for i := range 3 {
		data, diffID := layerTarOf(t, fmt.Sprintf("layer %d ", i), 50_000+i)
		d, err := b.PutLayer(context.Background(), diffID, opener(data, &opened))
		if err != nil {
			t.Fatal(err)
		}
		// Used two hours ago, three hours ago, ...: the first is the most
		// recent, and all are older than Keep.
		old := time.Now().Add(-time.Duration(i+2) * time.Hour)
		os.Chtimes(b.path(d.Digest), old, old)
		diffIDs = append(diffIDs, diffID)
		size = d.Size
	}
	// Room for two of the three: the least recently used goes.
	b.Max = 2*size + size/2
	freed, err := b.Prune()
	if err != nil {
		t.Fatal(err)
	}
	if freed == 0 {
		t.Fatalf("Prune freed nothing over its limit")
	}
	for i, want := range []bool{true, true, false} {
		if _, ok := b.Layer(diffIDs[i]); ok != want {
			t.Errorf("layer %d kept: %v, want %v", i, ok, want)
		}
	}
	// The pruned layer's index entry went with it.
	if ents, _ := os.ReadDir(filepath.Join(dir, "diffid")); len(ents) != 2 {
		t.Errorf("%d index entries after pruning one of three layers, want 2", len(ents))
	}
	// Blobs used within Keep are spared even over the limit.
	b.Max = 1
	if _, err := b.Prune(); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.Layer(diffIDs[0]); !ok {
		t.Errorf("a layer used just now was pruned")
	}
	// A pruned layer is compressed again when next needed.
	data, _ := layerTarOf(t, "layer 2 ", 50_002)
	before := opened.Load()
	if _, err := b.PutLayer(context.Background(), diffIDs[2], opener(data, &opened)); err != nil {
		t.Fatal(err)
	}
	if opened.Load() != before+1 {
		t.Errorf("a pruned layer was not read again")
	}
}

// A blob an image being pushed holds is not pruned, however old; once the
// image is let go, it is.
func TestBlobsPruneSparesPinnedBlobs(t *testing.T) {
	b, err := Open(t.TempDir(), 1)
	if err != nil {
		t.Fatal(err)
	}
	var opened atomic.Int64
	data, diffID := layerTarOf(t, "pinned ", 10_000)
	d, err := b.PutLayer(context.Background(), diffID, opener(data, &opened))
	if err != nil {
		t.Fatal(err)
	}
	descs, unpin, ok := b.Layers([]v1.Hash{diffID})
	if !ok || len(descs) != 1 || descs[0] != d {
		t.Fatalf("Layers = %v, %v", descs, ok)
	}
	old := time.Now().Add(-2 * Keep)
	os.Chtimes(b.path(d.Digest), old, old)
	if _, err := b.Prune(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(b.path(d.Digest)); err != nil {
		t.Fatalf("a pinned blob was pruned: %v", err)
	}
	unpin()
	unpin() // harmless twice
	if _, err := b.Prune(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(b.path(d.Digest)); err == nil {
		t.Errorf("an old blob nobody holds was not pruned over the limit")
	}
	if _, _, ok := b.Layers([]v1.Hash{diffID}); ok {
		t.Errorf("Layers finds a pruned layer")
	}
}

// A canceled PutLayer gives up, keeps nothing, and lets the next one in.
func TestPutLayerGivesUpWhenCanceled(t *testing.T) {
	dir := t.TempDir()
	b, err := Open(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	data, diffID := layerTarOf(t, "canceled ", 1<<20)
	ctx, cancel := context.WithCancel(context.Background())
	// The layer's reader cancels the context part-way through.
	open := func() (io.ReadCloser, error) {
		middle := bytes.NewReader(data[1000:2000])
		return io.NopCloser(io.MultiReader(bytes.NewReader(data[:1000]), readerFunc(func(p []byte) (int, error) {
			cancel()
			return middle.Read(p)
		}), bytes.NewReader(data[2000:]))), nil
	}
	if _, err := b.PutLayer(ctx, diffID, open); !errors.Is(err, context.Canceled) {
		t.Fatalf("PutLayer canceled part-way: %v, want context.Canceled", err)
	}
	for _, sub := range []string{"sha256", "diffid", "tmp"} {
		if ents, _ := os.ReadDir(filepath.Join(dir, sub)); len(ents) != 0 {
			t.Errorf("%s holds %d files after a canceled PutLayer, want none", sub, len(ents))
		}
	}
	var opened atomic.Int64
	if _, err := b.PutLayer(context.Background(), diffID, opener(data, &opened)); err != nil {
		t.Fatalf("PutLayer after a canceled one: %v", err)
	}
}

type readerFunc func(p []byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }
