package blob_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/cortex-os/core/pkg/blob"
)

// The Python SDK's data_url (sdk/python, cortexos.pointers) writes these
// very strings for these bytes.
var pythonVectors = []struct {
	data  []byte
	media string
	url   string
}{
	{[]byte("hello, cortex\x00\xff\n"), "", "data:application/octet-stream;base64,aGVsbG8sIGNvcnRleAD/Cg=="},
	{[]byte("héllo"), "text/plain;charset=utf-8", "data:text/plain;charset=utf-8;base64,aMOpbGxv"},
	{nil, "", "data:application/octet-stream;base64,"},
}

func TestDataURLMatchesPython(t *testing.T) {
	t.Parallel()
	for _, v := range pythonVectors {
		if got := blob.DataURL(v.data, v.media); got != v.url {
			t.Errorf("DataURL(%q, %q) = %q, Python writes %q", v.data, v.media, got, v.url)
		}
		p, err := blob.ParsePointer(v.url)
		if err != nil || p.Scheme != blob.SchemeData || !bytes.Equal(p.Data, v.data) || p.String() != v.url {
			t.Errorf("ParsePointer(%q) = %+v, %v", v.url, p, err)
		}
	}
}

func TestParsePointer(t *testing.T) {
	t.Parallel()
	good := []struct {
		in, scheme, bucket, key, media, data string
	}{
		{"obj://CORTEX_BLOBS/results/j1/1", "obj", "CORTEX_BLOBS", "results/j1/1", "", ""},
		{"obj://b-1_x/k", "obj", "b-1_x", "k", "", ""},
		{"data:,a%20b%zz%4", "data", "", "", "text/plain;charset=US-ASCII", "a b%zz%4"}, // as Python's unquote_to_bytes
		{"data:text/x-python,print(1)", "data", "", "", "text/x-python", "print(1)"},
		{"data:;base64,aGk=", "data", "", "", "text/plain;charset=US-ASCII", "hi"},
		{"memory://echo/j1", "memory", "", "", "", ""},
		{"redis://host/k", "redis", "", "", "", ""},
	}
	for _, g := range good {
		p, err := blob.ParsePointer(g.in)
		if err != nil {
			t.Errorf("ParsePointer(%q): %v", g.in, err)
			continue
		}
		if p.Scheme != g.scheme || p.Bucket != g.bucket || p.Key != g.key || p.MediaType != g.media || string(p.Data) != g.data || p.String() != g.in {
			t.Errorf("ParsePointer(%q) = %+v", g.in, p)
		}
		if p.Opaque() != (g.scheme != "obj" && g.scheme != "data") {
			t.Errorf("%q: Opaque() = %v", g.in, p.Opaque())
		}
	}
	for _, bad := range []string{"", "obj://", "obj://bucket", "obj://bucket/", "obj:///key", "obj://bad.bucket/k",
		"obj://a b/k", "data:no-comma", "data:;base64,***", "data:;base64,aGk", "data:;base64,aG\nk=", "no-scheme", "1abc:x", ":x"} {
		if p, err := blob.ParsePointer(bad); !errors.Is(err, blob.ErrBadPointer) {
			t.Errorf("ParsePointer(%q) = %+v, %v; want ErrBadPointer", bad, p, err)
		}
	}
}

func TestNewKeyIsRandom(t *testing.T) {
	t.Parallel()
	a, b := blob.NewKey("inputs/j1"), blob.NewKey("inputs/j1")
	if a == b || len(a) != len("inputs/j1/")+32 || a[:10] != "inputs/j1/" {
		t.Fatalf("NewKey: %q, %q", a, b)
	}
}

// FuzzParsePointer: any string parses or is ErrBadPointer, never panics;
// what parses is given back as it was, and obj:// and data: pointers made
// by this package parse to what they were made of.
func FuzzParsePointer(f *testing.F) {
	for _, s := range []string{"obj://CORTEX_BLOBS/results/j/1", "data:;base64,aGk=", "data:,a%2", "memory://x", "obj://a/", "data:", "x:"} {
		f.Add(s)
	}
	for _, v := range pythonVectors {
		f.Add(v.url)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := blob.ParsePointer(s)
		if err != nil {
			if !errors.Is(err, blob.ErrBadPointer) {
				t.Fatalf("ParsePointer(%q): %v, not ErrBadPointer", s, err)
			}
			return
		}
		if p.String() != s {
			t.Fatalf("ParsePointer(%q).String() = %q", s, p.String())
		}
		if p.Scheme == blob.SchemeObj {
			if q, err := blob.ParsePointer(blob.ObjPointer(p.Bucket, p.Key)); err != nil || q.Bucket != p.Bucket || q.Key != p.Key {
				t.Fatalf("obj round trip of %q: %+v, %v", s, q, err)
			}
		}
		d, err := blob.ParsePointer(blob.DataURL([]byte(s), ""))
		if err != nil || string(d.Data) != s {
			t.Fatalf("data: round trip of %q: %+v, %v", s, d, err)
		}
	})
}
