package worker

import "time"

// Transport is what a worker needs of the bus, for the tests' stand-ins.
type Transport = transport

// NewOnTransport is New on a stand-in for the bus: for the benchmarks that
// measure the runtime without NATS, and for tests of the configuration.
func NewOnTransport(t Transport, cfg Config) (*Worker, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	return newWorker(t, cfg), nil
}

// SetAnswerTimeout sets how long a result published for a scheduler's
// answer waits for it, until the test ends.
func SetAnswerTimeout(t interface{ Cleanup(func()) }, d time.Duration) {
	old := answerTimeout
	answerTimeout = d
	t.Cleanup(func() { answerTimeout = old })
}

// Answers reports, once the worker is Ready, how many results wait for a
// scheduler's answer and how many an answer has taken off that list.
func Answers(w *Worker) (pending int, resolved uint64) {
	<-w.Ready() // Run has set w.answers
	if w.answers == nil {
		return 0, 0
	}
	w.answers.mu.Lock()
	defer w.answers.mu.Unlock()
	return len(w.answers.pending), w.answers.resolved
}
