package wire

// WorkerJobSubject is a worker's own job subject, sys.worker.<id>.job: a
// worker whose heartbeats say direct takes jobs there as well as on its
// topics' queue groups, so that a strategy can pick that very worker.
func WorkerJobSubject(workerID string) string { return "sys.worker." + workerID + ".job" }
