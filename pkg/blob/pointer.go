// Package blob reads and writes the bytes behind job pointers: a job's input
// (JobRequest.context_ptr) and its result (JobResult.result_ptr).
//
// Two schemes are read and written, as the Python SDK does (sdk/python,
// cortexos.pointers), byte for byte:
//
//	data:[<media type>][;base64],<data>   the bytes inline (RFC 2397), for small values
//	obj://<bucket>/<key>                   an object in a JetStream object store bucket
//
// Any other pointer (memory://, redis://, s3://) is an opaque string: it
// parses (Pointer.Opaque) but a Store cannot read it (ErrUnsupported).
//
// Objects are stored with their SHA-256 digest and checked on every read
// (ErrChecksum). Anyone allowed to read the bucket can read any object whose
// key it knows, so keys must be unguessable: NewKey makes them so.
// docs/blobs.md.
package blob

import (
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// DefaultBucket is the object store bucket obj:// pointers are written to.
const DefaultBucket = "CORTEX_BLOBS"

// DefaultMaxBytes caps an object read or written unless told otherwise.
const DefaultMaxBytes = 64 << 20

// DefaultMediaType is the media type DataURL gives bytes.
const DefaultMediaType = "application/octet-stream"

// Sentinel errors; errors.Is finds them in what this package returns.
var (
	// ErrBadPointer: the string is not a pointer this package can parse.
	ErrBadPointer = errors.New("blob: bad pointer")
	// ErrUnsupported: a well-formed pointer of a scheme a Store cannot
	// read (memory://, redis://, ...).
	ErrUnsupported = errors.New("blob: unsupported pointer scheme")
	// ErrNotFound: no such object, or no such bucket.
	ErrNotFound = errors.New("blob: not found")
	// ErrTooLarge: an object over the size cap.
	ErrTooLarge = errors.New("blob: too large")
	// ErrChecksum: the bytes read do not match the object's SHA-256 digest.
	ErrChecksum = errors.New("blob: checksum mismatch")
)

// Schemes of the pointers this package reads.
const (
	SchemeData = "data"
	SchemeObj  = "obj"
)

var bucketRE = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// Pointer is a parsed pointer.
type Pointer struct {
	// Scheme: SchemeData, SchemeObj, or another scheme (an opaque pointer).
	Scheme string
	// Bucket and Key of an obj:// pointer.
	Bucket, Key string
	// Data and MediaType of a data: URL.
	Data      []byte
	MediaType string

	raw string
}

// String is the pointer as it goes on the wire.
func (p Pointer) String() string { return p.raw }

// Opaque reports whether the pointer is of a scheme this package cannot read.
func (p Pointer) Opaque() bool { return p.Scheme != SchemeData && p.Scheme != SchemeObj }

// ObjPointer is obj://<bucket>/<key>.
func ObjPointer(bucket, key string) string { return "obj://" + bucket + "/" + key }

// DataURL is data:<mediaType>;base64,<data> (mediaType "" is
// DefaultMediaType), exactly as the Python SDK's data_url writes it.
func DataURL(data []byte, mediaType string) string {
	if mediaType == "" {
		mediaType = DefaultMediaType
	}
	return "data:" + mediaType + ";base64," + base64.StdEncoding.EncodeToString(data)
}

// ParsePointer parses s. An obj:// pointer needs a bucket of letters, digits,
// - and _ and a non-empty key (which may hold slashes); a data: URL is
// decoded (base64 or percent-encoded). Any other <scheme>:... is an opaque
// pointer. Anything else is ErrBadPointer.
func ParsePointer(s string) (Pointer, error) {
	switch {
	case strings.HasPrefix(s, "obj://"):
		bucket, key, ok := strings.Cut(s[len("obj://"):], "/")
		if !ok || key == "" || !bucketRE.MatchString(bucket) {
			return Pointer{}, fmt.Errorf("%w: %q: want obj://<bucket>/<key>, bucket of letters, digits, - and _", ErrBadPointer, clip(s))
		}
		return Pointer{Scheme: SchemeObj, Bucket: bucket, Key: key, raw: s}, nil
	case strings.HasPrefix(s, "data:"):
		data, media, err := parseDataURL(s)
		if err != nil {
			return Pointer{}, err
		}
		return Pointer{Scheme: SchemeData, Data: data, MediaType: media, raw: s}, nil
	}
	scheme, _, ok := strings.Cut(s, ":")
	if !ok || !validScheme(scheme) || scheme == SchemeObj {
		return Pointer{}, fmt.Errorf("%w: %q: want <scheme>:...", ErrBadPointer, clip(s))
	}
	return Pointer{Scheme: scheme, raw: s}, nil
}

// validScheme: RFC 3986, ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ).
func validScheme(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case i > 0 && (c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return false
		}
	}
	return true
}

// parseDataURL reads data: URLs as the Python SDK's parse_data_url does: the
// media type is the first parameter (default text/plain;charset=US-ASCII),
// the body is base64 when the last parameter is "base64" (strictly: no
// whitespace, padding required), else percent-encoded.
func parseDataURL(s string) ([]byte, string, error) {
	head, body, ok := strings.Cut(s[len("data:"):], ",")
	if !ok {
		return nil, "", fmt.Errorf("%w: data: URL without a comma", ErrBadPointer)
	}
	params := strings.Split(head, ";")
	media := params[0]
	if media == "" {
		media = "text/plain;charset=US-ASCII"
	}
	if params[len(params)-1] == "base64" {
		if strings.ContainsAny(body, "\r\n") {
			return nil, "", fmt.Errorf("%w: data: URL with bad base64: line breaks", ErrBadPointer)
		}
		data, err := base64.StdEncoding.DecodeString(body)
		if err != nil {
			return nil, "", fmt.Errorf("%w: data: URL with bad base64: %v", ErrBadPointer, err)
		}
		return data, media, nil
	}
	return unquote(body), media, nil
}

// unquote decodes %XX escapes and leaves anything else, a bad escape
// included, as it is (Python's urllib.parse.unquote_to_bytes).
func unquote(s string) []byte {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			out = append(out, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
			continue
		}
		out = append(out, s[i])
	}
	return out
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
