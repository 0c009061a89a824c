/* Runs a program on an old kernel's x86_64 system call table: every system call that the
 * named kernel did not have fails with ENOSYS, as it would there, for the program and every
 * process it starts (a seccomp filter is inherited across fork and exec).
 *
 *   launcher 2.6.32|3.10 PROGRAM [ARG...]
 *
 * x86_64 numbers were handed out in order, so "did not have" is "a number above the last
 * one the kernel had": 298 (perf_event_open, 2.6.31) for 2.6.32, whose successor 299
 * (recvmmsg) came in 2.6.33; 313 (finit_module, 3.8) for 3.10, whose successor 314
 * (sched_setattr) came in 3.14. Everything later (statx, getrandom, copy_file_range,
 * memfd_create, renameat2, preadv2, pidfd_*, clone3, openat2, close_range, faccessat2,
 * epoll_pwait2, ...) lies above both. x32 numbers (bit 30) fail the same way; a call
 * through another ABI (int 0x80) kills the process.
 *
 * Compiled by tests/oldkernel.rs at test time; built with gcc, uses only the kernel's
 * uapi headers. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#define X32_BIT 0x40000000u

int main(int argc, char **argv) {
    unsigned last;
    if (argc < 3) {
        fprintf(stderr, "usage: %s 2.6.32|3.10 PROGRAM [ARG...]\n", argv[0]);
        return 2;
    }
    if (strcmp(argv[1], "2.6.32") == 0)
        last = 298;
    else if (strcmp(argv[1], "3.10") == 0)
        last = 313;
    else {
        fprintf(stderr, "%s: unknown kernel %s (2.6.32 or 3.10)\n", argv[0], argv[1]);
        return 2;
    }
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, X32_BIT, 1, 0),
        BPF_JUMP(BPF_JMP | BPF_JGT | BPF_K, last, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {
        .len = (unsigned short)(sizeof filter / sizeof filter[0]),
        .filter = filter,
    };
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        perror("prctl(PR_SET_NO_NEW_PRIVS)");
        return 2;
    }
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
        perror("prctl(PR_SET_SECCOMP)");
        return 2;
    }
    execvp(argv[2], argv + 2);
    fprintf(stderr, "%s: cannot run %s: %s\n", argv[0], argv[2], strerror(errno));
    return 127;
}
