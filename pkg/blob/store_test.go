package blob_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cortex-os/core/internal/natstest"
	"github.com/cortex-os/core/pkg/blob"
)

func newStore(t *testing.T, nc *nats.Conn, cfg blob.Config) *blob.Store {
	t.Helper()
	s, err := blob.New(nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestPutGetRoundTrip(t *testing.T) {
	t.Parallel()
	nc := natstest.Conn(t, natstest.URL(t))
	if err := blob.EnsureBucket(ctx(t), nc, blob.BucketConfig{TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	s := newStore(t, nc, blob.Config{})
	data := make([]byte, 300<<10) // several chunks
	_, _ = rand.Read(data)
	key := blob.NewKey("inputs/j1")
	p, err := s.PutBytes(ctx(t), key, data)
	if err != nil {
		t.Fatal(err)
	}
	if p.String() != "obj://CORTEX_BLOBS/"+key || p.Bucket != blob.DefaultBucket || p.Key != key {
		t.Fatalf("pointer %+v", p)
	}
	got, err := s.Get(ctx(t), p.String())
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get: %d bytes, %v", len(got), err)
	}
	// The bucket's TTL is what EnsureBucket set.
	js, _ := jetstream.New(nc)
	obs, err := js.ObjectStore(ctx(t), blob.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	st, err := obs.Status(ctx(t))
	if err != nil || st.TTL() != time.Hour {
		t.Fatalf("status %v, %v", st, err)
	}
	// A data: URL reads without the store; an empty object too.
	if got, err := s.Get(ctx(t), blob.DataURL([]byte("inline"), "")); err != nil || string(got) != "inline" {
		t.Fatalf("data: %q, %v", got, err)
	}
	p, err = s.PutBytes(ctx(t), blob.NewKey("empty"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(ctx(t), p.String()); err != nil || len(got) != 0 {
		t.Fatalf("empty: %q, %v", got, err)
	}
	if err := s.Delete(ctx(t), p.String()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx(t), p.String()); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("deleted: %v", err)
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	nc := natstest.Conn(t, natstest.URL(t))
	s := newStore(t, nc, blob.Config{})
	// No bucket, and the store does not create one.
	if _, err := s.PutBytes(ctx(t), "k", []byte("x")); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("put without bucket: %v", err)
	}
	if _, err := s.Get(ctx(t), "obj://CORTEX_BLOBS/nope"); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("get without bucket: %v", err)
	}
	// With Create, Put makes it (as the Python SDK does).
	c := newStore(t, nc, blob.Config{Create: true})
	if _, err := c.PutBytes(ctx(t), "k", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx(t), "obj://CORTEX_BLOBS/nope"); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("get missing key: %v", err)
	}
	for ptr, want := range map[string]error{
		"memory://echo/j1": blob.ErrUnsupported,
		"obj://bad.b/k":    blob.ErrBadPointer,
		"":                 blob.ErrBadPointer,
	} {
		if _, err := s.Get(ctx(t), ptr); !errors.Is(err, want) {
			t.Errorf("Get(%q): %v, want %v", ptr, err, want)
		}
	}
	if _, err := blob.New(nc, blob.Config{Bucket: "a.b"}); err == nil {
		t.Error("New accepted bucket a.b")
	}
}

func TestSizeCap(t *testing.T) {
	t.Parallel()
	nc := natstest.Conn(t, natstest.URL(t))
	if err := blob.EnsureBucket(ctx(t), nc, blob.BucketConfig{}); err != nil {
		t.Fatal(err)
	}
	small := newStore(t, nc, blob.Config{MaxBytes: 1000})
	big := newStore(t, nc, blob.Config{})
	data := bytes.Repeat([]byte("x"), 1001)
	// From bytes and from a stream of unknown length: refused, nothing kept.
	if _, err := small.PutBytes(ctx(t), "big1", data); !errors.Is(err, blob.ErrTooLarge) {
		t.Fatalf("PutBytes over the cap: %v", err)
	}
	_, err := small.Put(ctx(t), "big2", io.MultiReader(bytes.NewReader(data[:600]), bytes.NewReader(data[600:])))
	if !errors.Is(err, blob.ErrTooLarge) || !strings.Contains(err.Error(), "1000") {
		t.Fatalf("Put over the cap: %v", err)
	}
	if _, err := big.Get(ctx(t), "obj://CORTEX_BLOBS/big2"); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("a refused object was kept: %v", err)
	}
	// Exactly the cap goes; reading through a smaller cap is refused.
	if _, err := small.PutBytes(ctx(t), "ok", data[:1000]); err != nil {
		t.Fatal(err)
	}
	p, err := big.PutBytes(ctx(t), "big3", data)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := small.Get(ctx(t), p.String()); !errors.Is(err, blob.ErrTooLarge) {
		t.Fatalf("Get over the cap: %v", err)
	}
	if _, err := small.Get(ctx(t), blob.DataURL(data, "")); !errors.Is(err, blob.ErrTooLarge) {
		t.Fatalf("data: over the cap: %v", err)
	}
}

// TestChecksumMismatch rewrites an object's metadata with the digest of
// other bytes: reading it fails with ErrChecksum, never returning the bytes.
func TestChecksumMismatch(t *testing.T) {
	t.Parallel()
	nc := natstest.Conn(t, natstest.URL(t))
	if err := blob.EnsureBucket(ctx(t), nc, blob.BucketConfig{}); err != nil {
		t.Fatal(err)
	}
	s := newStore(t, nc, blob.Config{})
	p, err := s.PutBytes(ctx(t), "victim", []byte("the real bytes"))
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	obs, _ := js.ObjectStore(ctx(t), blob.DefaultBucket)
	info, err := obs.GetInfo(ctx(t), "victim")
	if err != nil {
		t.Fatal(err)
	}
	info.Digest = blob.DigestOf([]byte("other bytes!!!"))
	meta, _ := json.Marshal(info)
	msg := nats.NewMsg(blob.MetaSubject(blob.DefaultBucket, "victim"))
	msg.Header.Set("Nats-Rollup", "sub")
	msg.Data = meta
	if _, err := js.PublishMsg(ctx(t), msg); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx(t), p.String())
	if !errors.Is(err, blob.ErrChecksum) || got != nil {
		t.Fatalf("Get of a corrupted object: %q, %v", got, err)
	}
}
