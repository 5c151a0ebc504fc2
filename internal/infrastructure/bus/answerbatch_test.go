package bus_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/natstest"
	"github.com/cortex-os/core/internal/systest"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// batcherSetup starts a server with a scheduler's bus and a worker's, whose
// answers on <inbox>.* the test reads.
func batcherSetup(t *testing.T) (scheduler *bus.NatsBus, inbox string, got *answers) {
	t.Helper()
	srv := natstest.RunRestartable(t)
	scheduler = systest.ConnectWith(t, bus.Config{URL: srv.URL()})
	worker := systest.ConnectWith(t, bus.Config{URL: srv.URL()})
	inbox, got = subscribeAnswers(t, worker)
	flush(t, worker)
	return scheduler, inbox, got
}

// Results published with a batch subject are answered together: done
// answers wait for the batch (here until Close), and go as one answer that
// lists every result's number.
func TestAnswerBatcherAnswersTogether(t *testing.T) {
	t.Parallel()
	scheduler, inbox, got := batcherSetup(t)

	ab := bus.NewAnswerBatcher(scheduler, time.Hour)
	for n := 1; n <= 10; n++ {
		ab.Done(inbox+"."+strconv.Itoa(n), inbox+".batch")
	}
	ab.Close() // sends what waits
	flush(t, scheduler)
	systest.Eventually(t, waitFor, "the ten answers", func() bool {
		for n := 1; n <= 10; n++ {
			if got.get(inbox+"."+strconv.Itoa(n)) != bus.AnswerDone {
				return false
			}
		}
		return true
	})
	if single, batches := got.kinds(); single != 0 || batches != 1 {
		t.Fatalf("%d answers alone and %d batches; want 0 and 1", single, batches)
	}

	// Closed, the batcher answers each result alone.
	ab.Done(inbox+".11", inbox+".batch")
	flush(t, scheduler)
	systest.Eventually(t, waitFor, "the answer after Close", func() bool { return got.get(inbox+".11") == bus.AnswerDone })
	if single, _ := got.kinds(); single != 1 {
		t.Fatalf("%d answers alone after Close; want 1", single)
	}
}

// A batch is sent when it is full, without waiting for its delay; and it
// is sent when its delay is up, without Close.
func TestAnswerBatcherSendsFullBatchesAndLateOnes(t *testing.T) {
	t.Parallel()
	scheduler, inbox, got := batcherSetup(t)

	full := bus.NewAnswerBatcher(scheduler, time.Hour)
	defer full.Close()
	for n := 1; n <= bus.AnswerBatchMax; n++ {
		full.Done(inbox+"."+strconv.Itoa(n), inbox+".batch")
	}
	flush(t, scheduler)
	systest.Eventually(t, waitFor, "the full batch", func() bool {
		return got.get(inbox+"."+strconv.Itoa(bus.AnswerBatchMax)) == bus.AnswerDone
	})

	late := bus.NewAnswerBatcher(scheduler, time.Millisecond)
	defer late.Close()
	late.Done(inbox+".0", inbox+".batch")
	systest.Eventually(t, waitFor, "the answer its timer sent", func() bool { return got.get(inbox+".0") == bus.AnswerDone })
	if single, batches := got.kinds(); single != 0 || batches != 2 {
		t.Fatalf("%d answers alone and %d batches; want 0 and 2", single, batches)
	}
}

// What cannot be batched is answered alone: a reply subject that does not
// end in a number, a batch subject that is not an inbox, or one that is not
// next to the reply subject (another inbox than the result's own answers
// go to).
func TestAnswerBatcherAnswersTheRestAlone(t *testing.T) {
	t.Parallel()
	scheduler, inbox, got := batcherSetup(t)

	ab := bus.NewAnswerBatcher(scheduler, time.Hour)
	defer ab.Close()
	ab.Done(inbox+".x", inbox+".batch")
	ab.Done(inbox+".2", wire.SubjectSubmit)
	ab.Done(inbox+".3", "_INBOX.other.batch")
	ab.Done(inbox+".4", inbox+".batch.more")
	flush(t, scheduler)
	systest.Eventually(t, waitFor, "the four answers", func() bool {
		return got.get(inbox+".x") == bus.AnswerDone && got.get(inbox+".2") == bus.AnswerDone &&
			got.get(inbox+".3") == bus.AnswerDone && got.get(inbox+".4") == bus.AnswerDone
	})
	if single, batches := got.kinds(); single != 4 || batches != 0 {
		t.Fatalf("%d answers alone and %d batches; want 4 and 0", single, batches)
	}
}

// Through the durable intake: a result whose sender reads batched answers
// is answered done in a batch; one the handler failed is answered retry
// alone and at once; a result without the header is answered alone.
func TestAnsweredResultsAnsweredInBatches(t *testing.T) {
	t.Parallel()
	srv := natstest.RunRestartable(t)
	b, _ := durableResults(t, srv.URL())

	worker := systest.ConnectWith(t, bus.Config{URL: srv.URL()})
	inbox, got := subscribeAnswers(t, worker)
	flush(t, worker)
	for i, id := range []string{"a", "b", "c", "failing"} {
		if err := worker.PublishAnswered(wire.ResultSubject("w1"), resultPacket(id, "w1"), inbox+"."+strconv.Itoa(i+1), inbox+".batch"); err != nil {
			t.Fatal(err)
		}
	}
	if err := worker.PublishAnswered(wire.ResultSubject("w1"), resultPacket("d", "w1"), inbox+".5", ""); err != nil {
		t.Fatal(err)
	}
	flush(t, worker)
	systest.Eventually(t, waitFor, "the answers", func() bool {
		return got.get(inbox+".1") == bus.AnswerDone && got.get(inbox+".2") == bus.AnswerDone && got.get(inbox+".3") == bus.AnswerDone &&
			got.get(inbox+".4") == bus.AnswerRetry && got.get(inbox+".5") == bus.AnswerDone
	})
	single, batches := got.kinds()
	if single != 2 || batches < 1 || batches > 3 {
		t.Fatalf("%d answers alone and %d batches; want 2 alone (the retry, the result without the header) and the three others in 1 to 3 batches", single, batches)
	}
	if n := streamMsgs(t, b, wire.SubjectResult); n != 0 {
		t.Fatalf("the result stream holds %d messages; want 0", n)
	}
}

// Stopping the intake with an answer waiting for its batch stops cleanly,
// and the answer still goes (the batcher's Close, after the handlers,
// sends what waits: TestAnswerBatcherAnswersTogether pins that down).
func TestStoppingTheIntakeWithAnswersWaiting(t *testing.T) {
	t.Parallel()
	srv := natstest.RunRestartable(t)
	b := systest.ConnectWith(t, bus.Config{URL: srv.URL()})
	b.SetDurable(true)
	var handled counts
	stop, err := b.ConsumeTree(wire.SubjectResult, "results", func(_ string, p *pb.BusPacket, _ string) error {
		handled.add(p.GetJobResult().GetJobId())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	worker := systest.ConnectWith(t, bus.Config{URL: srv.URL()})
	inbox, got := subscribeAnswers(t, worker)
	flush(t, worker)
	if err := worker.PublishAnswered(wire.ResultSubject("w1"), resultPacket("a", "w1"), inbox+".1", inbox+".batch"); err != nil {
		t.Fatal(err)
	}
	flush(t, worker)
	systest.Eventually(t, waitFor, "the result handled", func() bool { return handled.get("a") == 1 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	systest.Eventually(t, waitFor, "the answer", func() bool { return got.get(inbox+".1") == bus.AnswerDone })
}
