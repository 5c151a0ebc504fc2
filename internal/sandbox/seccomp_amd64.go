package sandbox

import "syscall"

const (
	auditArch = 0xc000003e // AUDIT_ARCH_X86_64
	x32Bit    = 0x40000000 // __X32_SYSCALL_BIT
)

func deniedSyscalls() []int {
	return []int{
		syscall.SYS_PTRACE, 310, 311, // process_vm_readv, process_vm_writev
		syscall.SYS_MOUNT, syscall.SYS_UMOUNT2, syscall.SYS_PIVOT_ROOT, syscall.SYS_CHROOT,
		syscall.SYS_UNSHARE, 308, // setns
		syscall.SYS_KEYCTL, syscall.SYS_ADD_KEY, syscall.SYS_REQUEST_KEY,
		321,                              // bpf
		syscall.SYS_PERF_EVENT_OPEN, 323, // userfaultfd
		syscall.SYS_KEXEC_LOAD, 320, // kexec_file_load
		syscall.SYS_INIT_MODULE, 313, syscall.SYS_DELETE_MODULE, // 313: finit_module
		syscall.SYS_SWAPON, syscall.SYS_SWAPOFF, syscall.SYS_REBOOT, syscall.SYS_ACCT,
		304, 303, // open_by_handle_at, name_to_handle_at
		syscall.SYS_SYSLOG, syscall.SYS_QUOTACTL, syscall.SYS_FANOTIFY_INIT,
		syscall.SYS_SETTIMEOFDAY, syscall.SYS_CLOCK_SETTIME, syscall.SYS_ADJTIMEX, 305, // clock_adjtime
		syscall.SYS_SETHOSTNAME, syscall.SYS_SETDOMAINNAME,
		syscall.SYS_IOPL, syscall.SYS_IOPERM, syscall.SYS_USELIB, syscall.SYS_VHANGUP,
		syscall.SYS_PERSONALITY,
	}
}
