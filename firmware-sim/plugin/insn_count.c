/*
 * insn_count.c: a qemu TCG plugin that counts executed guest instructions per network
 * evaluation, for firmware-sim's repeatable ARM cost figure.
 *
 * How it counts: when qemu translates a translation block (TB) we learn its instruction count
 * and attach an exec callback carrying that number; every time the TB runs, the callback adds it
 * to the running vCPU's counter. Counts are exact for straight-line TBs; a TB left early by an
 * exception would be over-counted, which ordinary user-mode code does not do.
 *
 * How it brackets regions: the sampler issues prctl(0x45444745) right before and
 * prctl(0x45444746) right after each network evaluation when EDGEDIFF_SIM_MARKERS=1 (see
 * crates/runtime/src/marker.rs). Our syscall callback sees them (the kernel then rejects the
 * undefined option, harmlessly) and records the difference of the instruction totals.
 *
 * Output: at exit, JSON written to the file named by the plugin argument out=FILE (written to
 * FILE.tmp, then renamed):
 *   {"total": N, "loop": N, "evals": [N, ...], "unmatched_markers": N}
 * total = every guest instruction of the process; loop = from the first begin marker to the
 * last end marker (the whole sampling loop, scheduler steps included); evals = one entry per
 * bracketed evaluation.
 *
 * Debian ships no qemu-plugin.h, so the few parts of the plugin API (version 1, qemu 7.x) we use
 * are declared here. Build: gcc -O2 -shared -fPIC -o insn_count.so insn_count.c
 * Run:   qemu-aarch64 -plugin ./insn_count.so,out=counts.json ./program
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- qemu plugin API v1 (the subset used; signatures as in qemu 7.2's qemu-plugin.h) ---- */
typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t qemu_info_t; /* only passed by pointer */
struct qemu_plugin_tb;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_vcpu_syscall_cb_t)(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num,
                                              uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4,
                                              uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8);
extern void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
extern void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, qemu_plugin_vcpu_udata_cb_t cb,
                                                 enum qemu_plugin_cb_flags flags, void *userdata);
extern size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
extern void qemu_plugin_register_vcpu_syscall_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_syscall_cb_t cb);
extern void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
#define QEMU_PLUGIN_EXPORT __attribute__((visibility("default")))
QEMU_PLUGIN_EXPORT int qemu_plugin_version = 1;
/* ------------------------------------------------------------------------------------------ */

#define AARCH64_NR_PRCTL 167
#define MAGIC_BEGIN 0x45444745ULL
#define MAGIC_END 0x45444746ULL
#define MAX_VCPUS 256

/* One counter per vCPU (= guest thread in user mode), each on its own cache line: only its own
 * thread writes it, so no locked instruction is needed on the hot path. */
struct slot {
    uint64_t n;
    char pad[56];
};
static struct slot counts[MAX_VCPUS];
static uint64_t overflow; /* vCPUs beyond MAX_VCPUS share this one, atomically */

static char *out_path;
static uint64_t begin_at, first_begin, last_end, unmatched;
static int in_eval, seen_begin;
static uint64_t *evals;
static size_t n_evals, cap_evals;

static void tb_exec(unsigned int vcpu, void *udata)
{
    uint64_t n = (uint64_t)(uintptr_t)udata;
    if (vcpu < MAX_VCPUS) {
        __atomic_store_n(&counts[vcpu].n, __atomic_load_n(&counts[vcpu].n, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
    } else {
        __atomic_fetch_add(&overflow, n, __ATOMIC_RELAXED);
    }
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    qemu_plugin_register_vcpu_tb_exec_cb(tb, tb_exec, QEMU_PLUGIN_CB_NO_REGS, (void *)(uintptr_t)n);
}

static uint64_t total(void)
{
    uint64_t sum = __atomic_load_n(&overflow, __ATOMIC_RELAXED);
    for (int i = 0; i < MAX_VCPUS; i++) {
        sum += __atomic_load_n(&counts[i].n, __ATOMIC_RELAXED);
    }
    return sum;
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t a1, uint64_t a2,
                       uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8)
{
    (void)id; (void)vcpu; (void)a2; (void)a3; (void)a4; (void)a5; (void)a6; (void)a7; (void)a8;
    if (num != AARCH64_NR_PRCTL || (a1 != MAGIC_BEGIN && a1 != MAGIC_END)) {
        return;
    }
    uint64_t now = total();
    if (a1 == MAGIC_BEGIN) {
        unmatched += in_eval; /* a begin without an end */
        in_eval = 1;
        begin_at = now;
        if (!seen_begin) {
            seen_begin = 1;
            first_begin = now;
        }
        return;
    }
    if (!in_eval) {
        unmatched++;
        return;
    }
    in_eval = 0;
    last_end = now;
    if (n_evals == cap_evals) {
        size_t cap = cap_evals ? cap_evals * 2 : 64;
        uint64_t *grown = realloc(evals, cap * sizeof *evals);
        if (!grown) {
            unmatched++;
            return;
        }
        evals = grown;
        cap_evals = cap;
    }
    evals[n_evals++] = now - begin_at;
}

static void at_exit(qemu_plugin_id_t id, void *udata)
{
    (void)id; (void)udata;
    size_t len = strlen(out_path);
    char *tmp = malloc(len + 5);
    if (!tmp) {
        fprintf(stderr, "insn_count: out of memory\n");
        return;
    }
    memcpy(tmp, out_path, len);
    memcpy(tmp + len, ".tmp", 5);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        fprintf(stderr, "insn_count: cannot write %s\n", tmp);
        free(tmp);
        return;
    }
    uint64_t loop = seen_begin && last_end >= first_begin ? last_end - first_begin : 0;
    fprintf(f, "{\"total\": %llu, \"loop\": %llu, \"unmatched_markers\": %llu, \"evals\": [",
            (unsigned long long)total(), (unsigned long long)loop, (unsigned long long)(unmatched + in_eval));
    for (size_t i = 0; i < n_evals; i++) {
        fprintf(f, "%s%llu", i ? ", " : "", (unsigned long long)evals[i]);
    }
    fprintf(f, "]}\n");
    int bad = ferror(f);
    if (fclose(f) != 0 || bad || rename(tmp, out_path) != 0) {
        fprintf(stderr, "insn_count: cannot write %s\n", out_path);
    }
    free(tmp);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    (void)info;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0 && argv[i][4] != '\0') {
            out_path = strdup(argv[i] + 4);
        } else {
            fprintf(stderr, "insn_count: unknown argument '%s' (expected out=FILE)\n", argv[i]);
            return -1;
        }
    }
    if (!out_path) {
        fprintf(stderr, "insn_count: missing argument out=FILE\n");
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
