package kvstore

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// writeTimeout bounds a write made with a context that has no deadline:
// the JetStream client's default for its API calls. (A variable for tests.)
var writeTimeout = 5 * time.Second

// put writes data under key if the key's last revision is rev (0: the key
// has never been written), as kv.Create and kv.Update do: one request to the
// bucket's stream with the expected-last-subject-sequence header, answered
// on the Store's own acknowledgement subscription (acks). It skips what the
// library adds around that request (options, a context per call, a channel
// and a reply subject per request, a reflective JSON decode of every
// acknowledgement): a success is read by parsePubAck. handled is false
// when the write should go the library's way instead: no responders yet
// (the library waits and retries) or an answer this code does not read;
// nothing was stored then.
func (s *Store) put(ctx context.Context, key string, data []byte, rev uint64) (seq uint64, handled bool, err error) {
	if s.putPrefix == "" {
		return 0, false, nil
	}
	ans, err := s.acks.request(ctx, s.putPrefix, key, data, rev)
	if err == nil && ans.noResponders {
		return 0, false, nil
	}
	if err != nil {
		return 0, true, err
	}
	if seq, ok := parsePubAck(ans.data, s.streamName); ok {
		return seq, true, nil
	}
	var r struct {
		Error *jetstream.APIError `json:"error"`
	}
	if json.Unmarshal(ans.data, &r) == nil && r.Error != nil {
		return 0, true, r.Error // errors.As finds the code: isRevisionMismatch
	}
	return 0, false, nil
}

// parsePubAck reads the sequence from a JetStream publish acknowledgement of
// stream, {"stream":"<stream>","seq":N[,...]}, without reflection. ok is
// false for anything else (an error, another stream, another shape): the
// caller decodes it the careful way.
func parsePubAck(b []byte, stream string) (seq uint64, ok bool) {
	if bytes.Contains(b, []byte(`"error"`)) {
		return 0, false
	}
	const pre = `{"stream":"`
	if !bytes.HasPrefix(b, []byte(pre)) {
		return 0, false
	}
	b = b[len(pre):]
	if len(b) < len(stream)+1 || string(b[:len(stream)]) != stream || b[len(stream)] != '"' {
		return 0, false
	}
	i := bytes.Index(b, []byte(`"seq":`))
	if i < 0 {
		return 0, false
	}
	b = b[i+len(`"seq":`):]
	n := 0
	for n < len(b) && b[n] >= '0' && b[n] <= '9' {
		n++
	}
	if n == 0 || n == len(b) || (b[n] != ',' && b[n] != '}') {
		return 0, false
	}
	seq, err := strconv.ParseUint(string(b[:n]), 10, 64)
	if err != nil || seq == 0 {
		return 0, false
	}
	return seq, true
}

// ownWrites remembers the values this Store is writing or wrote while a
// Watch with SkipOwnWrites runs, by key, so that the watch need not decode
// and hand back what the writer already has. A value is noted before its
// write is sent (the watch may see the write before the writer hears back),
// and forgotten when the watch meets it or the write fails. The watch skips
// an entry only if its value is byte for byte the one noted: another
// process's write to the key is never skipped (its record differs, if only in
// its time stamp). The set is bounded: one value per key, cleared at
// ownWritesMax (the watch then merely decodes a few of this store's writes).
type ownWrites struct {
	mu  sync.Mutex
	on  int // running watches that skip
	set map[string][]byte

	// While a watch follows the bucket by its gaps (watchGaps), the
	// revisions of this Store's stored writes, for it to take.
	gaps     bool
	seqs     []uint64
	sent     uint64              // writes noted so far: a write's token is its number
	inflight map[uint64]struct{} // the tokens of writes not answered yet
}

const ownWritesMax = 1 << 16

// note records that data is being written under key, if a watch skips,
// and returns the write's token for stored or failed (0: none).
func (o *ownWrites) note(key string, data []byte) (token uint64) {
	o.mu.Lock()
	if o.on > 0 {
		if len(o.set) >= ownWritesMax {
			clear(o.set)
		}
		o.set[key] = data
	}
	if o.gaps {
		o.sent++
		token = o.sent
		o.inflight[token] = struct{}{}
	}
	o.mu.Unlock()
	return token
}

// failed forgets a write of data under key that was not stored.
func (o *ownWrites) failed(key string, data []byte, token uint64) {
	o.mu.Lock()
	if v, ok := o.set[key]; ok && len(v) == len(data) && (len(v) == 0 || &v[0] == &data[0]) {
		delete(o.set, key)
	}
	if token != 0 {
		delete(o.inflight, token)
	}
	o.mu.Unlock()
}

// answered reports the number of the last write noted, and whether every
// write up to number cut has been answered.
func (o *ownWrites) answered(cut uint64) (sent uint64, done bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	done = true
	for t := range o.inflight {
		if t <= cut {
			done = false
			break
		}
	}
	return o.sent, done
}

// stored records that data under key was stored at revision seq: a watch
// that follows the gaps (watchGaps) need not read it, and forgets it.
func (o *ownWrites) stored(key string, data []byte, seq, token uint64) {
	o.mu.Lock()
	if token != 0 {
		delete(o.inflight, token)
	}
	if o.gaps {
		o.seqs = append(o.seqs, seq)
		if v, ok := o.set[key]; ok && len(v) == len(data) && (len(v) == 0 || &v[0] == &data[0]) {
			delete(o.set, key)
		}
	}
	o.mu.Unlock()
}

// takeSeqs hands over the revisions stored records since the last call,
// appended to buf.
func (o *ownWrites) takeSeqs(buf []uint64) []uint64 {
	o.mu.Lock()
	buf = append(buf, o.seqs...)
	o.seqs = o.seqs[:0]
	o.mu.Unlock()
	return buf
}

// followGaps makes the calling watch the one that follows the gaps; false
// if another already does.
func (o *ownWrites) followGaps() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.gaps {
		return false
	}
	o.gaps = true
	o.seqs = o.seqs[:0]
	o.inflight = make(map[uint64]struct{})
	return true
}

func (o *ownWrites) stopGaps() {
	o.mu.Lock()
	o.gaps = false
	o.seqs = nil
	o.inflight = nil
	o.mu.Unlock()
}

// take reports whether data under key is a value this Store wrote, and
// forgets it.
func (o *ownWrites) take(key string, data []byte) bool {
	o.mu.Lock()
	v, ok := o.set[key]
	ok = ok && bytes.Equal(v, data)
	if ok {
		delete(o.set, key)
	}
	o.mu.Unlock()
	return ok
}

func (o *ownWrites) start() {
	o.mu.Lock()
	if o.set == nil {
		o.set = make(map[string][]byte)
	}
	o.on++
	o.mu.Unlock()
}

func (o *ownWrites) stop() {
	o.mu.Lock()
	if o.on--; o.on == 0 {
		clear(o.set)
	}
	o.mu.Unlock()
}
