package blob

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Config configures a Store. Zero values are the defaults.
type Config struct {
	// Bucket obj:// pointers are written to. Default DefaultBucket.
	Bucket string
	// MaxBytes caps an object written or read. Default DefaultMaxBytes.
	MaxBytes int64
	// Create: Put creates the bucket (with TTL and Replicas) when it does
	// not exist, as the Python SDK does. Without it a missing bucket is
	// ErrNotFound: EnsureBucket, run by the scheduler, creates it.
	Create bool
	// TTL and Replicas of a bucket Put creates (Create). See BucketConfig.
	TTL      time.Duration
	Replicas int
}

// Store reads and writes pointers over one NATS connection. It is safe for
// concurrent use.
type Store struct {
	js  jetstream.JetStream
	cfg Config

	mu     sync.Mutex
	stores map[string]jetstream.ObjectStore
}

// New returns a Store on nc.
func New(nc *nats.Conn, cfg Config) (*Store, error) {
	if nc == nil {
		return nil, errors.New("blob: a NATS connection is required")
	}
	if cfg.Bucket == "" {
		cfg.Bucket = DefaultBucket
	}
	if !bucketRE.MatchString(cfg.Bucket) {
		return nil, fmt.Errorf("blob: bucket %q: letters, digits, - and _ only", cfg.Bucket)
	}
	if cfg.MaxBytes < 0 || cfg.TTL < 0 || cfg.Replicas < 0 {
		return nil, errors.New("blob: MaxBytes, TTL and Replicas must not be negative")
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("blob: %w", err)
	}
	return &Store{js: js, cfg: cfg, stores: map[string]jetstream.ObjectStore{}}, nil
}

// Bucket is the bucket Put writes to.
func (s *Store) Bucket() string { return s.cfg.Bucket }

// MaxBytes is the size cap.
func (s *Store) MaxBytes() int64 { return s.cfg.MaxBytes }

// BucketConfig configures the bucket EnsureBucket creates.
type BucketConfig struct {
	// Bucket. Default DefaultBucket.
	Bucket string
	// TTL: objects older than this are dropped (the stream's MaxAge). Set it
	// to the job store's retention, so that a job's input and result live
	// as long as its record. Default 0: kept for ever, as job records are.
	TTL time.Duration
	// Replicas in a cluster. Default 1.
	Replicas int
	// MaxBytes caps the whole bucket; 0 unlimited.
	MaxBytes int64
	// Storage: jetstream.FileStorage (the zero value) or MemoryStorage.
	Storage jetstream.StorageType
}

// EnsureBucket creates the bucket, or updates its configuration to cfg.
func EnsureBucket(ctx context.Context, nc *nats.Conn, cfg BucketConfig) error {
	if cfg.Bucket == "" {
		cfg.Bucket = DefaultBucket
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if !bucketRE.MatchString(cfg.Bucket) || cfg.TTL < 0 || cfg.Replicas < 0 || cfg.MaxBytes < 0 {
		return fmt.Errorf("blob: bucket config %+v: bad bucket name or negative value", cfg)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("blob: %w", err)
	}
	_, err = js.CreateOrUpdateObjectStore(ctx, objectStoreConfig(cfg))
	if err != nil {
		return fmt.Errorf("blob: bucket %s: %w", cfg.Bucket, err)
	}
	return nil
}

func objectStoreConfig(cfg BucketConfig) jetstream.ObjectStoreConfig {
	mb := cfg.MaxBytes
	if mb == 0 {
		mb = -1
	}
	return jetstream.ObjectStoreConfig{
		Bucket: cfg.Bucket, Description: "CortexOS job inputs and results",
		TTL: cfg.TTL, Replicas: cfg.Replicas, MaxBytes: mb, Storage: cfg.Storage,
	}
}

func (s *Store) bucket(ctx context.Context, name string, create bool) (jetstream.ObjectStore, error) {
	s.mu.Lock()
	obs, ok := s.stores[name]
	s.mu.Unlock()
	if ok {
		return obs, nil
	}
	obs, err := s.js.ObjectStore(ctx, name)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		if !create {
			return nil, fmt.Errorf("%w: bucket %s does not exist", ErrNotFound, name)
		}
		obs, err = s.js.CreateObjectStore(ctx, objectStoreConfig(BucketConfig{Bucket: name, TTL: s.cfg.TTL, Replicas: max(s.cfg.Replicas, 1)}))
		if errors.Is(err, jetstream.ErrBucketExists) {
			obs, err = s.js.ObjectStore(ctx, name)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("blob: bucket %s: %w", name, err)
	}
	s.mu.Lock()
	s.stores[name] = obs
	s.mu.Unlock()
	return obs, nil
}

// NewKey is prefix/<128 random bits in hex>: a key nobody can guess, as
// keys must be (docs/blobs.md). prefix "" is just the random part.
func NewKey(prefix string) string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	if prefix == "" {
		return hex.EncodeToString(b[:])
	}
	return strings.TrimSuffix(prefix, "/") + "/" + hex.EncodeToString(b[:])
}

// Put stores what r holds under key in the Store's bucket and returns its
// obj:// pointer. More than MaxBytes is ErrTooLarge (nothing is kept).
func (s *Store) Put(ctx context.Context, key string, r io.Reader) (Pointer, error) {
	if key == "" {
		return Pointer{}, fmt.Errorf("%w: empty key", ErrBadPointer)
	}
	obs, err := s.bucket(ctx, s.cfg.Bucket, s.cfg.Create)
	if err != nil {
		return Pointer{}, err
	}
	lr := &limitReader{r: r, left: s.cfg.MaxBytes}
	if _, err := obs.Put(ctx, jetstream.ObjectMeta{Name: key}, lr); err != nil {
		if lr.over {
			return Pointer{}, fmt.Errorf("%w: more than %d bytes (the cap)", ErrTooLarge, s.cfg.MaxBytes)
		}
		return Pointer{}, fmt.Errorf("blob: writing obj://%s/%s: %w", s.cfg.Bucket, key, err)
	}
	raw := ObjPointer(s.cfg.Bucket, key)
	return Pointer{Scheme: SchemeObj, Bucket: s.cfg.Bucket, Key: key, raw: raw}, nil
}

// PutBytes is Put of data.
func (s *Store) PutBytes(ctx context.Context, key string, data []byte) (Pointer, error) {
	if int64(len(data)) > s.cfg.MaxBytes {
		return Pointer{}, fmt.Errorf("%w: %d bytes, the cap is %d", ErrTooLarge, len(data), s.cfg.MaxBytes)
	}
	return s.Put(ctx, key, bytes.NewReader(data))
}

type limitReader struct {
	r    io.Reader
	left int64
	over bool
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.left < 0 {
		l.over = true
		return 0, ErrTooLarge
	}
	if int64(len(p)) > l.left+1 {
		p = p[:l.left+1]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	if l.left < 0 {
		l.over = true
		return 0, ErrTooLarge
	}
	return n, err
}

// Open returns a reader of the bytes behind ptr (data: or obj://) and their
// size. Reading an object checks its SHA-256 digest at the end: a mismatch
// is ErrChecksum from Read, never io.EOF. The caller closes the reader.
func (s *Store) Open(ctx context.Context, ptr string) (io.ReadCloser, int64, error) {
	p, err := ParsePointer(ptr)
	if err != nil {
		return nil, 0, err
	}
	switch p.Scheme {
	case SchemeData:
		if int64(len(p.Data)) > s.cfg.MaxBytes {
			return nil, 0, fmt.Errorf("%w: %d bytes, the cap is %d", ErrTooLarge, len(p.Data), s.cfg.MaxBytes)
		}
		return io.NopCloser(bytes.NewReader(p.Data)), int64(len(p.Data)), nil
	case SchemeObj:
	default:
		return nil, 0, fmt.Errorf("%w: %q (a Store reads data: and obj://)", ErrUnsupported, clip(ptr))
	}
	obs, err := s.bucket(ctx, p.Bucket, false)
	if err != nil {
		return nil, 0, err
	}
	info, err := obs.GetInfo(ctx, p.Key)
	if err != nil {
		return nil, 0, s.readErr(ptr, err)
	}
	if int64(info.Size) > s.cfg.MaxBytes {
		return nil, 0, fmt.Errorf("%w: %s: %d bytes, the cap is %d", ErrTooLarge, ptr, info.Size, s.cfg.MaxBytes)
	}
	want, err := jetstream.DecodeObjectDigest(info.Digest)
	if err != nil || len(want) != sha256.Size {
		return nil, 0, fmt.Errorf("%w: %s: no SHA-256 digest (%q)", ErrChecksum, ptr, info.Digest)
	}
	res, err := obs.Get(ctx, p.Key)
	if err != nil {
		return nil, 0, s.readErr(ptr, err)
	}
	return &checked{r: res, h: sha256.New(), want: want, ptr: ptr, left: int64(info.Size)}, int64(info.Size), nil
}

func (s *Store) readErr(ptr string, err error) error {
	switch {
	case errors.Is(err, jetstream.ErrObjectNotFound), errors.Is(err, jetstream.ErrBucketNotFound):
		return fmt.Errorf("%w: %s", ErrNotFound, ptr)
	case errors.Is(err, jetstream.ErrDigestMismatch):
		return fmt.Errorf("%w: %s", ErrChecksum, ptr)
	}
	return fmt.Errorf("blob: reading %s: %w", ptr, err)
}

// checked verifies the digest of what it reads, independently of the
// client library's own check, and reads no more than the object's size.
type checked struct {
	r jetstream.ObjectResult
	h interface {
		io.Writer
		Sum([]byte) []byte
	}
	want []byte
	ptr  string
	left int64
	err  error
}

func (c *checked) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.r.Read(p)
	c.h.Write(p[:n])
	c.left -= int64(n)
	switch {
	case c.left < 0:
		c.err = fmt.Errorf("%w: %s: more bytes than its recorded size", ErrChecksum, c.ptr)
		return 0, c.err
	case errors.Is(err, io.EOF):
		if c.left != 0 || !bytes.Equal(c.h.Sum(nil), c.want) {
			c.err = fmt.Errorf("%w: %s: content does not match its SHA-256 digest", ErrChecksum, c.ptr)
			return n, c.err
		}
		c.err = io.EOF
	case err != nil:
		if errors.Is(err, jetstream.ErrDigestMismatch) {
			c.err = fmt.Errorf("%w: %s: content does not match its SHA-256 digest", ErrChecksum, c.ptr)
		} else {
			c.err = fmt.Errorf("blob: reading %s: %w", c.ptr, err)
		}
		return n, c.err
	}
	return n, err
}

func (c *checked) Close() error { return c.r.Close() }

// Get returns the bytes behind ptr (data: or obj://), at most MaxBytes,
// checked against the object's digest.
func (s *Store) Get(ctx context.Context, ptr string) ([]byte, error) {
	r, size, err := s.Open(ctx, ptr)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	buf := bytes.NewBuffer(make([]byte, 0, size))
	if _, err := io.Copy(buf, r); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Delete removes the object behind an obj:// pointer; a missing one is
// ErrNotFound.
func (s *Store) Delete(ctx context.Context, ptr string) error {
	p, err := ParsePointer(ptr)
	if err != nil {
		return err
	}
	if p.Scheme != SchemeObj {
		return fmt.Errorf("%w: %q is not an obj:// pointer", ErrUnsupported, clip(ptr))
	}
	obs, err := s.bucket(ctx, p.Bucket, false)
	if err != nil {
		return err
	}
	if err := obs.Delete(ctx, p.Key); err != nil {
		return s.readErr(ptr, err)
	}
	return nil
}

// digestOf is the object store's digest string of data (tests).
func digestOf(data []byte) string {
	sum := sha256.Sum256(data)
	return "SHA-256=" + base64.URLEncoding.EncodeToString(sum[:])
}
