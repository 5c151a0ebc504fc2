package sandbox

import "syscall"

const (
	auditArch = 0xc00000b7 // AUDIT_ARCH_AARCH64
	x32Bit    = 0
)

func deniedSyscalls() []int {
	return []int{
		syscall.SYS_PTRACE, 270, 271, // process_vm_readv, process_vm_writev
		syscall.SYS_MOUNT, syscall.SYS_UMOUNT2, syscall.SYS_PIVOT_ROOT, syscall.SYS_CHROOT,
		syscall.SYS_UNSHARE, syscall.SYS_SETNS,
		syscall.SYS_KEYCTL, syscall.SYS_ADD_KEY, syscall.SYS_REQUEST_KEY,
		280,                              // bpf
		syscall.SYS_PERF_EVENT_OPEN, 282, // userfaultfd
		syscall.SYS_KEXEC_LOAD, 294, // kexec_file_load
		syscall.SYS_INIT_MODULE, 273, syscall.SYS_DELETE_MODULE, // 273: finit_module
		syscall.SYS_SWAPON, syscall.SYS_SWAPOFF, syscall.SYS_REBOOT, syscall.SYS_ACCT,
		syscall.SYS_OPEN_BY_HANDLE_AT, syscall.SYS_NAME_TO_HANDLE_AT,
		syscall.SYS_SYSLOG, syscall.SYS_QUOTACTL, syscall.SYS_FANOTIFY_INIT,
		syscall.SYS_SETTIMEOFDAY, syscall.SYS_CLOCK_SETTIME, syscall.SYS_ADJTIMEX, 266, // clock_adjtime
		syscall.SYS_SETHOSTNAME, syscall.SYS_SETDOMAINNAME,
		syscall.SYS_VHANGUP, syscall.SYS_PERSONALITY,
	}
}
