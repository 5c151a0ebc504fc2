package sandbox

// SeccompProgramForTest exposes the filter to the tests.
func SeccompProgramForTest() []byte { return seccompProgram() }
