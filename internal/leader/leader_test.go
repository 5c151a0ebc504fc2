package leader_test

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cortex-os/core/internal/jobstore"
	"github.com/cortex-os/core/internal/leader"
	"github.com/cortex-os/core/internal/natstest"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

func js(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	j, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// One candidate wins; the other waits. Resigning hands the lease over at
// once, with a larger fencing token; a term that lapses (its renewals
// stopped, as in a paused process) is fenced, and a standby takes over.
func TestElectionHandoverAndFencing(t *testing.T) {
	t.Parallel()
	url := natstest.URL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lease := 800 * time.Millisecond
	a, err := leader.New(ctx, leader.Config{JS: js(t, url), ID: "a", Lease: lease})
	if err != nil {
		t.Fatal(err)
	}
	b, err := leader.New(ctx, leader.Config{JS: js(t, url), ID: "b", Lease: lease})
	if err != nil {
		t.Fatal(err)
	}
	ta, err := a.Campaign(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bwon := make(chan *leader.Term, 1)
	go func() {
		tb, err := b.Campaign(ctx)
		if err == nil {
			bwon <- tb
		}
	}()
	// b stays standby while a renews, through several leases.
	select {
	case <-bwon:
		t.Fatal("b won while a held the lease")
	case <-time.After(3 * lease):
	}
	if !ta.Valid() {
		t.Fatal("a's term lapsed while it renewed")
	}
	if h, _, _ := a.Holder(ctx); h != "a" {
		t.Fatalf("holder %q, want a", h)
	}
	store := leader.FencedStore{Store: jobstore.NewMemory(), Fence: ta, Token: ta.Token}
	job := &pb.JobInfo{JobId: "j1", State: pb.JobState_JOB_STATE_PENDING}
	if _, err := store.Create(ctx, job); err != nil {
		t.Fatalf("create in term: %v", err)
	}
	ta.Resign(ctx)
	if ta.Valid() {
		t.Fatal("a resigned but its term is valid")
	}
	if _, err := store.Create(ctx, &pb.JobInfo{JobId: "j2", State: pb.JobState_JOB_STATE_PENDING}); !errors.Is(err, leader.ErrFenced) {
		t.Fatalf("create after resign: %v, want ErrFenced", err)
	}
	var tb *leader.Term
	select {
	case tb = <-bwon:
	case <-ctx.Done():
		t.Fatal("b never won after a resigned")
	}
	if tb.Token <= ta.Token {
		t.Fatalf("b's token %d not above a's %d", tb.Token, ta.Token)
	}

	// Terms go on growing.
	tb.Resign(ctx)
	ta2, err := a.Campaign(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ta2.Token <= tb.Token {
		t.Fatalf("token %d not above %d", ta2.Token, tb.Token)
	}
	ta2.Resign(ctx)
}

// A lease nobody renews lapses on the server and a standby takes it; the
// old holder's term is not valid by then.
func TestLapsedLeaseIsTakenOver(t *testing.T) {
	t.Parallel()
	url := natstest.URL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lease := 800 * time.Millisecond
	j := js(t, url)
	a, err := leader.New(ctx, leader.Config{JS: j, ID: "a", Lease: lease})
	if err != nil {
		t.Fatal(err)
	}
	// A holder that died: its key, written straight to the bucket, with
	// nobody to renew it.
	kv, err := j.KeyValue(ctx, leader.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(ctx, leader.DefaultKey, []byte("dead")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ta, err := a.Campaign(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < lease/2 {
		t.Fatalf("took over after %s, before the lease (%s) could lapse", took, lease)
	}
	if h, _, _ := a.Holder(ctx); h != "a" {
		t.Fatalf("holder %q after takeover, want a", h)
	}
	ta.Resign(ctx)
}

// FencedStore fences every write of jobstore.Store: a method added to the
// interface must be listed here as a read, or fenced.
func TestFencedStoreCoversEveryWrite(t *testing.T) {
	reads := map[string]bool{"Get": true, "List": true, "ListPage": true, "Watch": true, "InProcess": true}
	fenced := reflect.TypeOf(leader.FencedStore{})
	st := reflect.TypeOf((*jobstore.Store)(nil)).Elem()
	for i := range st.NumMethod() {
		name := st.Method(i).Name
		if reads[name] {
			continue
		}
		m, ok := fenced.MethodByName(name)
		if !ok || m.Index < 0 || !declaredOnFenced(name) {
			t.Errorf("jobstore.Store.%s is neither a read nor fenced by leader.FencedStore: fence it (leader/fenced.go)", name)
		}
	}
}

func declaredOnFenced(name string) bool {
	switch name {
	case "Create", "Update":
		return true
	}
	return false
}

// fakeClock is a clock a test moves by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// A leader whose renewals stop succeeding in time (a paused process: its
// clock jumps past the validity of its last renewal) is fenced at once:
// Valid is false, Lost is closed, the fenced store and dead letters refuse
// every write with ErrFenced, and reads still pass.
func TestTermPastItsValidityIsFenced(t *testing.T) {
	t.Parallel()
	url := natstest.URL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	clock := &fakeClock{now: time.Now()}
	el, err := leader.New(ctx, leader.Config{JS: js(t, url), ID: "paused", Lease: 4 * time.Second, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	term, err := el.Campaign(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mem := jobstore.NewMemory()
	store := leader.FencedStore{Store: mem, Fence: term, Token: term.Token}
	dead := leader.FencedDeadLetters{DeadLetters: jobstore.NewMemoryDeadLetters(), Fence: term, Token: term.Token}
	rec, err := store.Create(ctx, &pb.JobInfo{JobId: "j", State: pb.JobState_JOB_STATE_PENDING})
	if err != nil {
		t.Fatal(err)
	}
	clock.Add(3 * time.Second) // past 3/4 of the lease since the last renewal
	if term.Valid() {
		t.Fatal("term valid past its validity")
	}
	next := &pb.JobInfo{JobId: "j", State: pb.JobState_JOB_STATE_CANCELLED}
	if _, err := store.Update(ctx, rec, next); !errors.Is(err, leader.ErrFenced) {
		t.Errorf("update: %v, want ErrFenced", err)
	}
	if _, err := store.Create(ctx, &pb.JobInfo{JobId: "k", State: pb.JobState_JOB_STATE_PENDING}); !errors.Is(err, leader.ErrFenced) {
		t.Errorf("create: %v, want ErrFenced", err)
	}
	if err := dead.Put(ctx, next); !errors.Is(err, leader.ErrFenced) {
		t.Errorf("dead letter put: %v, want ErrFenced", err)
	}
	if _, err := dead.Take(ctx, "j"); !errors.Is(err, leader.ErrFenced) {
		t.Errorf("dead letter take: %v, want ErrFenced", err)
	}
	if got, err := store.Get(ctx, "j"); err != nil || got.Job.GetState() != pb.JobState_JOB_STATE_PENDING {
		t.Errorf("read through the fence: %v, %v", got.Job, err)
	}
	select {
	case <-term.Lost():
	case <-ctx.Done():
		t.Fatal("Lost not closed after the validity passed")
	}
}
