package sandbox

import "encoding/binary"

// The seccomp filter bwrap installs (--seccomp FD: a compiled classic BPF
// program, struct sock_filter[]) before it runs the job's code. A deny
// list: the system calls a Python program has no use for and that widen
// the kernel's attack surface or reach out of the sandbox (tracing other
// processes, mounting, new namespaces, keyrings, BPF, perf, userfaultfd,
// io_uring, modules, reboot, clocks). They fail with EPERM. A system call
// of another architecture's ABI (i386's int 0x80 on x86-64, x32) kills the
// process: the numbers below would not mean what they say.

// BPF opcodes and seccomp return values (linux/filter.h, linux/seccomp.h).
const (
	bpfLdWAbs = 0x20 // BPF_LD | BPF_W | BPF_ABS
	bpfJeqK   = 0x15 // BPF_JMP | BPF_JEQ | BPF_K
	bpfJgeK   = 0x35 // BPF_JMP | BPF_JGE | BPF_K
	bpfRetK   = 0x06 // BPF_RET | BPF_K

	seccompRetKillProcess = 0x80000000
	seccompRetErrno       = 0x00050000
	seccompRetAllow       = 0x7fff0000
	errnoEPERM            = 1

	offsetNr   = 0 // struct seccomp_data: int nr; __u32 arch; ...
	offsetArch = 4
)

// Newer system calls share their numbers on every architecture.
const (
	sysIOUringSetup    = 425
	sysIOUringEnter    = 426
	sysIOUringRegister = 427
	sysOpenTree        = 428
	sysMoveMount       = 429
	sysFsopen          = 430
	sysFsconfig        = 431
	sysFsmount         = 432
	sysFspick          = 433
	sysMountSetattr    = 442
)

type sockFilter struct {
	code   uint16
	jt, jf uint8
	k      uint32
}

// seccompProgram returns the filter for this architecture, encoded for
// bwrap; nil where there is none (an architecture without a list).
func seccompProgram() []byte {
	if auditArch == 0 {
		return nil
	}
	denied := append(deniedSyscalls(), sysIOUringSetup, sysIOUringEnter, sysIOUringRegister,
		sysOpenTree, sysMoveMount, sysFsopen, sysFsconfig, sysFsmount, sysFspick, sysMountSetattr)
	prog := []sockFilter{
		{code: bpfLdWAbs, k: offsetArch},
		{code: bpfJeqK, jt: 1, k: auditArch},
		{code: bpfRetK, k: seccompRetKillProcess},
		{code: bpfLdWAbs, k: offsetNr},
	}
	if x32Bit != 0 {
		// x32 system calls on x86-64 carry this bit: refuse them all.
		prog = append(prog, sockFilter{code: bpfJgeK, jf: 1, k: x32Bit}, sockFilter{code: bpfRetK, k: seccompRetKillProcess})
	}
	n := len(denied)
	for i, nr := range denied {
		// On a match, jump past the remaining checks and the allow.
		prog = append(prog, sockFilter{code: bpfJeqK, jt: uint8(n - i), k: uint32(nr)})
	}
	prog = append(prog,
		sockFilter{code: bpfRetK, k: seccompRetAllow},
		sockFilter{code: bpfRetK, k: seccompRetErrno | errnoEPERM},
	)
	out := make([]byte, 0, 8*len(prog))
	for _, f := range prog {
		out = binary.NativeEndian.AppendUint16(out, f.code)
		out = append(out, f.jt, f.jf)
		out = binary.NativeEndian.AppendUint32(out, f.k)
	}
	return out
}
