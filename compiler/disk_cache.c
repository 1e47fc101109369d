/*
 * disk_cache.c - compiled kernels kept on disk between processes.
 *
 * One file per kernel: "<dir>/<kernel>-<key>.lhk", holding one header line
 *     "LHKC1 <key> <payload bytes> <fnv64 of payload>\n"
 * followed by the payload (the PTX text, or a record's payload). Writers fill a temporary file
 * and rename it over the final name, and rename is atomic, so a reader sees either a whole entry or none; several
 * processes compiling the same kernel at once each rename a complete file and the last wins.
 * A reader still verifies size and checksum, because files get truncated or damaged outside
 * our control (full disks, crashes before data reached the disk, copies).
 *
 * The PTX of an entry is loaded into the GPU, so the cache trusts only what its user alone can
 * have written, as ssh does its own files: the directory must belong to this user (or root) and
 * be writable by nobody else, and an entry must be a regular file (opened without following a
 * link and without blocking, so a FIFO or a device cannot hang the compile) that belongs to
 * this user (or root) and is writable by nobody else. Entries are opened relative to the
 * directory that was checked. The checksum only detects accidents.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "compiler_internal.h"

#define ENTRY_MAGIC "LHKC1"
#define ENTRY_MAX_BYTES (256u << 20) /* no kernel comes near; guards a garbage size field */

void lhc_default_cache_dir(char *out, size_t cap) {
    const char *env = getenv("LIGHTHOUSE_CACHE_DIR");
    const char *xdg = getenv("XDG_CACHE_HOME");
    const char *home = getenv("HOME");
    if (env && *env) snprintf(out, cap, "%s", env);
    else if (xdg && *xdg) snprintf(out, cap, "%s/liblighthouse", xdg);
    else if (home && *home) snprintf(out, cap, "%s/.cache/liblighthouse", home);
    else if (cap) out[0] = '\0';
}

static void entry_name(char *out, size_t cap, const char *kernel, const char *key) {
    snprintf(out, cap, "%s-%s.lhk", kernel, key);
}

/* mkdir -p: every missing component, tolerating a concurrent creator. */
static int make_dirs(const char *dir) {
    char path[4096];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof path) return -1;
    memcpy(path, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (path[i] != '/' && path[i] != '\0') continue;
        char saved = path[i];
        path[i] = '\0';
        if (mkdir(path, 0755) != 0 && errno != EEXIST) return -1;
        path[i] = saved;
    }
    return 0;
}

static int trusted_owner(uid_t uid) { return uid == geteuid() || uid == 0; }

/* Whether an open file may be trusted: a regular file (a directory when `dir`) of this user or
 * root that nobody else can write. `why` receives the reason when it may not. */
static int trusted(int fd, const char *what, const char *name, int dir, char *why, size_t cap) {
    struct stat st;
    if (fstat(fd, &st) != 0) {
        snprintf(why, cap, "%s %s cannot be inspected (%s)", what, name, strerror(errno));
        return 0;
    }
    if (dir ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode)) {
        snprintf(why, cap, "%s %s is not a %s", what, name, dir ? "directory" : "regular file");
        return 0;
    }
    if (!trusted_owner(st.st_uid)) {
        snprintf(why, cap, "%s %s belongs to uid %u, not to this user (uid %u) or root", what, name,
                 (unsigned)st.st_uid, (unsigned)geteuid());
        return 0;
    }
    if (st.st_mode & (S_IWGRP | S_IWOTH)) {
        snprintf(why, cap, "%s %s is writable by group or others (mode %04o)", what, name,
                 (unsigned)(st.st_mode & 07777));
        return 0;
    }
    return 1;
}

/* The cache directory, opened: a descriptor >= 0; -1 when it does not exist or cannot be
 * opened (no cache, nothing to report); -2 when it exists but may not be trusted (`why`). */
static int open_dir(const char *dir, char *why, size_t cap) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    if (!trusted(fd, "the kernel cache directory", dir, 1, why, cap)) {
        close(fd);
        return -2;
    }
    return fd;
}

/* Reads entry `name` of the directory `dfd`: 1 with a malloc'd NUL-terminated copy, 0 when
 * absent, -1 when unreadable or too large, -2 when it may not be trusted (`why`). */
static int read_whole(int dfd, const char *name, char **data, size_t *size, char *why,
                      size_t cap) {
    int fd = openat(dfd, name, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return 0;
        if (errno == ELOOP) {
            snprintf(why, cap, "the kernel cache entry %s is a symbolic link, not a regular file",
                     name);
            return -2;
        }
        return -1;
    }
    if (!trusted(fd, "the kernel cache entry", name, 0, why, cap)) {
        close(fd);
        return -2;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size < 0 || (uint64_t)st.st_size > ENTRY_MAX_BYTES) {
        close(fd);
        return -1;
    }
    size_t n = (size_t)st.st_size;
    char *buf = malloc(n + 1);
    size_t got = 0;
    while (buf && got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fd);
    if (!buf || got != n) {
        free(buf);
        return -1;
    }
    buf[n] = '\0';
    *data = buf;
    *size = n;
    return 1;
}

int lhc_disk_read(const char *dir, const char *kernel, const char *key_hex, int text,
                  char **payload, size_t *size, char *why, size_t why_cap) {
    char name[512];
    entry_name(name, sizeof name, kernel, key_hex);
    int dfd = open_dir(dir, why, why_cap);
    if (dfd == -1) return 0;
    if (dfd < 0) return dfd;
    char *file = NULL;
    size_t file_size = 0;
    int r = read_whole(dfd, name, &file, &file_size, why, why_cap);
    close(dfd);
    if (r <= 0) return r;

    char magic[8], key[40];
    unsigned long long payload_size, checksum;
    int header_len = 0;
    int ok = sscanf(file, "%7s %39s %llu %llx%n", magic, key, &payload_size, &checksum,
                    &header_len) == 4 &&
             strcmp(magic, ENTRY_MAGIC) == 0 && strcmp(key, key_hex) == 0 &&
             (size_t)header_len < file_size && file[header_len] == '\n';
    size_t start = (size_t)header_len + 1;
    ok = ok && payload_size == file_size - start &&
         lhc_hash64(file + start, (size_t)payload_size) == checksum &&
         (!text || memchr(file + start, '\0', (size_t)payload_size) == NULL);
    if (!ok) {
        free(file);
        return -1;
    }
    memmove(file, file + start, (size_t)payload_size);
    file[payload_size] = '\0';
    *payload = file;
    *size = (size_t)payload_size;
    return 1;
}

static int write_all(int fd, const char *data, size_t size) {
    while (size > 0) {
        ssize_t w = write(fd, data, size);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        data += w;
        size -= (size_t)w;
    }
    return 0;
}

int lhc_disk_write(const char *dir, const char *kernel, const char *key_hex, const char *payload,
                   size_t size, char *why, size_t why_cap) {
    static atomic_uint counter;
    if (make_dirs(dir) != 0) return -1;
    int dfd = open_dir(dir, why, why_cap);
    if (dfd < 0) return dfd;
    char name[512], tmp[600], header[128];
    entry_name(name, sizeof name, kernel, key_hex);
    /* pid + counter: unique among the processes and threads writing this directory. */
    snprintf(tmp, sizeof tmp, "%s.%ld.%u.tmp", name, (long)getpid(), atomic_fetch_add(&counter, 1));
    int header_len = snprintf(header, sizeof header, "%s %s %llu %016llx\n", ENTRY_MAGIC, key_hex,
                              (unsigned long long)size, (unsigned long long)lhc_hash64(payload, size));
    int fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) {
        close(dfd);
        return -1;
    }
    int bad = write_all(fd, header, (size_t)header_len) || write_all(fd, payload, size);
    bad = close(fd) != 0 || bad;
    /* rename replaces whatever was at the entry's name (a damaged entry, a FIFO, a link) */
    if (bad || renameat(dfd, tmp, dfd, name) != 0) {
        unlinkat(dfd, tmp, 0);
        close(dfd);
        return -1;
    }
    close(dfd);
    return 0;
}
