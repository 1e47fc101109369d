/*
 * test_cache_safety.c - the disk cache trusts only what its user alone can have written:
 * regular files, opened without blocking and without following links, in a directory that
 * belongs to the user (or root) and that nobody else can write; anything else is not used, the
 * compile still succeeds, and one sentence on stderr says why. A FIFO at an entry's path must
 * not hang the compile (a watchdog ends the program if it does).
 */
#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "compiler_internal.h"
#include "runtime.h"
#include "test_compiler_util.h"

#define CONSTANTS "DTYPE=bf16 D=64 P=4 L=3 THREADS=256 RUN=4 TOKENS=128"
#define OTHER_CONSTANTS "DTYPE=f16 D=64 P=4 L=3 THREADS=256 RUN=4 TOKENS=128"

static char dir[1024];

static void dir_setup(void) { ck_assert_int_eq(make_temp_dir(dir, sizeof dir), 0); }
static void dir_teardown(void) {
    chmod(dir, 0700);
    remove_temp_dir(dir);
}

static void on_alarm(int sig) {
    (void)sig;
    static const char msg[] = "test_compiler: a kernel cache access blocked (watchdog)\n";
    if (write(2, msg, sizeof msg - 1) < 0) _exit(3);
    _exit(2);
}

/* Compiles CONSTANTS (or OTHER_CONSTANTS) with a fresh cache at `dir`, under a watchdog, with
 * stderr captured into `err`; returns the cache's statistics. */
static lhc_cache_stats compile_fresh(const char *constants, char *err, size_t cap) {
    char path[1100];
    snprintf(path, sizeof path, "%s.stderr", dir);
    int saved = dup(2), fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    ck_assert_int_ge(fd, 0);
    fflush(stderr);
    dup2(fd, 2);
    lhc_cache *c = NULL;
    ck_assert_int_eq(lhc_cache_create(&c), LH_OK);
    ck_assert_int_eq(lhc_cache_set_dir(c, dir), LH_OK);
    const lhc_kernel *k = NULL;
    signal(SIGALRM, on_alarm);
    alarm(120);
    lh_status st = lhc_compile(c, "scatter", constants, "sm_90", &k);
    /* a second kernel through the same cache: no second sentence */
    const lhc_kernel *k2 = NULL;
    lh_status st2 = lhc_compile(c, "scatter", OTHER_CONSTANTS, "sm_90", &k2);
    alarm(0);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    ck_assert_msg(st == LH_OK && st2 == LH_OK, "compile failed: %s", lh_error_message());
    ck_assert_ptr_nonnull(strstr(k->ptx, ".entry lh_scatter"));
    ssize_t n = pread(fd, err, cap - 1, 0);
    err[n > 0 ? n : 0] = '\0';
    close(fd);
    unlink(path);
    lhc_cache_stats s;
    lhc_cache_get_stats(c, &s);
    lhc_cache_destroy(c);
    return s;
}

/* Compiles CONSTANTS alone into `dir`; `path` receives its entry (the only file there). */
static void make_entry(char *path, size_t cap) {
    lhc_cache *c = NULL;
    ck_assert_int_eq(lhc_cache_create(&c), LH_OK);
    ck_assert_int_eq(lhc_cache_set_dir(c, dir), LH_OK);
    const lhc_kernel *k = NULL;
    ck_assert_int_eq(lhc_compile(c, "scatter", CONSTANTS, "sm_90", &k), LH_OK);
    lhc_cache_destroy(c);
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    path[0] = '\0';
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".lhk")) snprintf(path, cap, "%s/%s", dir, e->d_name);
    closedir(d);
    ck_assert_msg(path[0], "no entry was written");
}

static void expect_one_sentence(const char *err, const char *needle) {
    printf("  stderr: %s", err);
    ck_assert_msg(strstr(err, "liblighthouse") && strstr(err, needle),
                  "stderr \"%s\" lacks a sentence about \"%s\"", err, needle);
    const char *nl = strchr(err, '\n');
    ck_assert_msg(nl && nl[1] == '\0', "more than one line on stderr: \"%s\"", err);
}

START_TEST(fifo_at_entry_path_does_not_block) {
    char path[1400], err[2048];
    make_entry(path, sizeof path);
    ck_assert_int_eq(unlink(path), 0);
    ck_assert_int_eq(mkfifo(path, 0600), 0);
    lhc_cache_stats s = compile_fresh(CONSTANTS, err, sizeof err);
    ck_assert_int_eq(s.compiles, 2);
    ck_assert_int_eq(s.disk_hits, 0);
    ck_assert_int_eq(s.disk_unsafe, 1);
    expect_one_sentence(err, "regular file");
    /* the new entry replaced the FIFO: the next cache reads it */
    struct stat st;
    ck_assert_int_eq(lstat(path, &st), 0);
    ck_assert(S_ISREG(st.st_mode));
    s = compile_fresh(CONSTANTS, err, sizeof err);
    ck_assert_int_eq(s.disk_hits, 2);
    ck_assert_str_eq(err, "");
}
END_TEST

START_TEST(symlink_at_entry_path_not_followed) {
    char path[1400], target[1400], err[2048];
    make_entry(path, sizeof path);
    snprintf(target, sizeof target, "%s/elsewhere", dir);
    ck_assert_int_eq(rename(path, target), 0);
    ck_assert_int_eq(symlink(target, path), 0);   /* a valid entry behind a link */
    lhc_cache_stats s = compile_fresh(CONSTANTS, err, sizeof err);
    ck_assert_int_eq(s.compiles, 2);
    ck_assert_int_eq(s.disk_unsafe, 1);
    expect_one_sentence(err, "regular file");
}
END_TEST

START_TEST(entry_writable_by_others_not_used) {
    char path[1400], err[2048];
    make_entry(path, sizeof path);
    ck_assert_int_eq(chmod(path, 0666), 0);
    lhc_cache_stats s = compile_fresh(CONSTANTS, err, sizeof err);
    ck_assert_int_eq(s.compiles, 2);
    ck_assert_int_eq(s.disk_unsafe, 1);
    expect_one_sentence(err, "writable");
    struct stat st;   /* rewritten by this user, not writable by others */
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_eq(st.st_mode & 022, 0);
}
END_TEST

static int count_entries(void) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

START_TEST(directory_writable_by_others_not_used) {
    char path[1400], err[2048];
    make_entry(path, sizeof path);
    const mode_t modes[] = {0777, 01777, 0770};   /* like /tmp, or a group's shared folder */
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        ck_assert_int_eq(chmod(dir, modes[i]), 0);
        lhc_cache_stats s = compile_fresh(CONSTANTS, err, sizeof err);
        ck_assert_int_eq(s.disk_hits, 0);   /* the valid entry inside is not trusted */
        ck_assert_int_eq(s.compiles, 2);
        ck_assert_int_ge(s.disk_unsafe, 1);
        expect_one_sentence(err, "writable");
        ck_assert_int_eq(count_entries(), 1);   /* and nothing was written there */
    }
}
END_TEST

START_TEST(directory_of_another_user_not_used) {
    if (geteuid() != 0) {
        printf("  not root: files of another user cannot be made here; skipped\n");
        return;
    }
    char path[1400], err[2048];
    make_entry(path, sizeof path);
    ck_assert_int_eq(chown(dir, 65534, 65534), 0);   /* nobody's directory, mode 0700 */
    lhc_cache_stats s = compile_fresh(CONSTANTS, err, sizeof err);
    ck_assert_int_eq(s.disk_hits, 0);
    ck_assert_int_eq(s.compiles, 2);
    expect_one_sentence(err, "belongs to");
    ck_assert_int_eq(chown(dir, 0, 0), 0);
    ck_assert_int_eq(chown(path, 65534, 65534), 0);   /* nobody's entry in our directory */
    s = compile_fresh(CONSTANTS, err, sizeof err);
    ck_assert_int_eq(s.disk_unsafe, 1);
    ck_assert_int_eq(s.compiles, 2);
    expect_one_sentence(err, "belongs to");
}
END_TEST

TCase *cache_safety_tcase(void) {
    TCase *t = tcase_create("cache safety");
    tcase_add_checked_fixture(t, dir_setup, dir_teardown);
    tcase_set_timeout(t, 300);
    tcase_add_test(t, fifo_at_entry_path_does_not_block);
    tcase_add_test(t, symlink_at_entry_path_not_followed);
    tcase_add_test(t, entry_writable_by_others_not_used);
    tcase_add_test(t, directory_writable_by_others_not_used);
    tcase_add_test(t, directory_of_another_user_not_used);
    return t;
}
