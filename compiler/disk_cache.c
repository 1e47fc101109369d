/*
 * disk_cache.c - compiled kernels kept on disk between processes.
 *
 * One file per kernel: "<dir>/<kernel>-<key>.lhk", holding one header line
 *     "LHKC1 <key> <payload bytes> <fnv64 of payload>\n"
 * followed by the payload (the PTX text). Writers fill a temporary file and rename it over the
 * final name, and rename is atomic, so a reader sees either a whole entry or none; several
 * processes compiling the same kernel at once each rename a complete file and the last wins.
 * A reader still verifies size and checksum, because files get truncated or damaged outside
 * our control (full disks, crashes before data reached the disk, copies).
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

static void entry_path(char *out, size_t cap, const char *dir, const char *kernel, const char *key) {
    snprintf(out, cap, "%s/%s-%s.lhk", dir, kernel, key);
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

static int read_whole(const char *path, char **data, size_t *size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? 0 : -1;
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

int lhc_disk_read(const char *dir, const char *kernel, const char *key_hex, char **payload,
                  size_t *size) {
    char path[4200];
    entry_path(path, sizeof path, dir, kernel, key_hex);
    char *file = NULL;
    size_t file_size = 0;
    int r = read_whole(path, &file, &file_size);
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
         memchr(file + start, '\0', (size_t)payload_size) == NULL;
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
                   size_t size) {
    static atomic_uint counter;
    if (make_dirs(dir) != 0) return -1;
    char path[4200], tmp[4300], header[128];
    entry_path(path, sizeof path, dir, kernel, key_hex);
    /* pid + counter: unique among the processes and threads writing this directory. */
    snprintf(tmp, sizeof tmp, "%s.%ld.%u.tmp", path, (long)getpid(), atomic_fetch_add(&counter, 1));
    int header_len = snprintf(header, sizeof header, "%s %s %llu %016llx\n", ENTRY_MAGIC, key_hex,
                              (unsigned long long)size, (unsigned long long)lhc_hash64(payload, size));
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) return -1;
    int bad = write_all(fd, header, (size_t)header_len) || write_all(fd, payload, size);
    bad = close(fd) != 0 || bad;
    if (bad || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}
