/* cudnn_prefetch.c - cuDNN's libraries read into the page cache ahead of its first graph
 * (cudnn_prefetch.h). */
#define _GNU_SOURCE /* dladdr */
#include "cudnn_prefetch.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <glob.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cudnn_api.h"
#include "cuda_verbose.h"

#define READ_BLOCK (1 << 20)
#define READ_WINDOW (32 << 20)

static bool regular_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* `dir`/`name` into out when it is a regular file. */
static bool try_dir(const char *dir, size_t dir_len, const char *name, char *out) {
    if (dir_len == 0) return false;
    int n = snprintf(out, LH_PREFETCH_PATH_MAX, "%.*s/%s", (int)dir_len, dir, name);
    return n > 0 && n < LH_PREFETCH_PATH_MAX && regular_file(out);
}

/* pip's NVIDIA wheels put each package's libraries in site-packages/nvidia/<package>/lib, cuDNN's
 * among them, and their libraries find each other there. */
static bool try_wheels(const char *cudnn_dir, const char *name, char *out) {
    char pattern[LH_PREFETCH_PATH_MAX];
    int n = snprintf(pattern, sizeof pattern, "%s/../../*/lib/%s", cudnn_dir, name);
    if (n <= 0 || n >= (int)sizeof pattern) return false;
    glob_t g;
    bool found = false;
    if (glob(pattern, GLOB_NOSORT, NULL, &g) == 0) {
        for (size_t i = 0; i < g.gl_pathc && !found; i++) {
            if (strlen(g.gl_pathv[i]) < LH_PREFETCH_PATH_MAX && regular_file(g.gl_pathv[i])) {
                snprintf(out, LH_PREFETCH_PATH_MAX, "%s", g.gl_pathv[i]);
                found = true;
            }
        }
    }
    globfree(&g);
    return found;
}

/* Every directory of a colon-separated list. */
static bool try_list(const char *list, const char *name, char *out) {
    for (const char *p = list; p && *p;) {
        const char *end = strchr(p, ':');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (try_dir(p, len, name, out)) return true;
        p = end ? end + 1 : NULL;
    }
    return false;
}

static const char system_dirs[] =
    "/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib:"
    "/usr/local/cuda/targets/sbsa-linux/lib:/usr/lib/x86_64-linux-gnu:/usr/lib/aarch64-linux-gnu:"
    "/usr/lib64:/lib64:/usr/lib:/lib";

static void add(const lh_prefetch_where *w, const char *name, lh_prefetch_files *out) {
    if (out->count >= LH_PREFETCH_MAX_FILES) return;
    char *path = out->path[out->count];
    const char *cudnn = w->cudnn_dir;
    if ((cudnn && try_dir(cudnn, strlen(cudnn), name, path)) ||
        (cudnn && try_wheels(cudnn, name, path)) || try_list(w->search_path, name, path) ||
        try_list(system_dirs, name, path))
        out->count++;
}

void lh_prefetch_find(const lh_prefetch_where *w, lh_prefetch_files *out) {
    out->count = 0;
    if (w->driver_dir && out->count < LH_PREFETCH_MAX_FILES &&
        try_dir(w->driver_dir, strlen(w->driver_dir), "libnvidia-ptxjitcompiler.so.1",
                out->path[out->count]))
        out->count++;
    if (!w->jit_only) add(w, "libcudnn_engines_precompiled.so.9", out);
    add(w, "libcudnn_heuristic.so.9", out);
    add(w, "libcudnn_engines_runtime_compiled.so.9", out);
    if (w->cuda_major > 0) {
        char name[64];
        if (!w->jit_only) {
            snprintf(name, sizeof name, "libcublasLt.so.%d", w->cuda_major);
            add(w, name, out);
        }
        snprintf(name, sizeof name, "libnvrtc.so.%d", w->cuda_major);
        add(w, name, out);
        snprintf(name, sizeof name, "libnvrtc-builtins.so.%d.%d", w->cuda_major, w->cuda_minor);
        add(w, name, out);
    }
}

int64_t lh_prefetch_read(const lh_prefetch_files *files, const atomic_bool *stop) {
    char *block = malloc(READ_BLOCK);
    if (!block) return 0;
    int64_t total = 0;
    for (int i = 0; i < files->count && !atomic_load(stop); i++) {
        int fd = open(files->path[i], O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        /* The kernel is asked for the next window ahead of each block, so the disk always has
         * work queued, but never more than one window that a stop could not take back. */
        off_t at = 0, asked = 0;
        ssize_t got = 1;
        while (got > 0 && !atomic_load(stop)) {
            if (at >= asked) {
                posix_fadvise(fd, at, READ_WINDOW, POSIX_FADV_WILLNEED);
                asked = at + READ_WINDOW;
            }
            got = read(fd, block, READ_BLOCK);
            if (got > 0) at += got, total += got;
        }
        close(fd);
    }
    free(block);
    return total;
}

/* ---- once per process ------------------------------------------------------------------------ */

/* Everything that asks the dynamic loader (cuDNN's loading, dladdr) runs on the caller's thread:
 * unloading the library runs prefetch_end under the loader's lock, so a thread that could still
 * wait for that lock must never be joined there. The thread only reads files. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_t thread;
static bool started;
static atomic_bool stop;
static lh_prefetch_files files;

/* The directory of the shared object that holds `addr`, or "" where the loader cannot say. */
static void dir_of(const void *addr, char *out, size_t cap) {
    Dl_info info;
    out[0] = '\0';
    if (!dladdr(addr, &info) || !info.dli_fname || !strchr(info.dli_fname, '/')) return;
    snprintf(out, cap, "%s", info.dli_fname);
    char *slash = strrchr(out, '/');
    if (slash) *slash = '\0';
}

static void *prefetch_run(void *arg) {
    (void)arg;
    int64_t t0 = lh_clock_us();
    int64_t bytes = lh_prefetch_read(&files, &stop);
    lh_cuda_say("cuDNN's libraries read ahead: %d files, %.0f MB in %.1f ms", files.count,
                (double)bytes / 1e6, (double)(lh_clock_us() - t0) / 1e3);
    return NULL;
}

/* A forked child has the flag but not the thread. */
static void forget_in_child(void) { started = false; }

static void begin_locked(const lh_cu_api *cu) {
    const lh_cudnn_api *dnn;
    /* where cuDNN cannot be loaded, the plan that needs it says why */
    if (!lh_cudnn_try_load(&dnn)) return;
    char cudnn_dir[LH_PREFETCH_PATH_MAX], driver_dir[LH_PREFETCH_PATH_MAX];
    void *addr;
    memcpy(&addr, &dnn->Create, sizeof addr);
    dir_of(addr, cudnn_dir, sizeof cudnn_dir);
    memcpy(&addr, &cu->Init, sizeof addr);
    dir_of(addr, driver_dir, sizeof driver_dir);
    const char *config = getenv("CUDNN_LIB_CONFIG");
    lh_prefetch_where where = {
        .cudnn_dir = cudnn_dir[0] ? cudnn_dir : NULL,
        .driver_dir = driver_dir[0] ? driver_dir : NULL,
        .cuda_major = (int)(dnn->cudart_version / 1000),
        .cuda_minor = (int)(dnn->cudart_version % 1000 / 10),
        .jit_only = config && strcmp(config, "GRAPH_JIT_ONLY") == 0,
        .search_path = getenv("LD_LIBRARY_PATH"),
    };
    lh_prefetch_find(&where, &files);
    if (files.count == 0) return;
    pthread_atfork(NULL, NULL, forget_in_child);
    started = pthread_create(&thread, NULL, prefetch_run, NULL) == 0;
}

void lh_cudnn_prefetch_begin(const lh_cu_api *cu) {
    const char *env = getenv("LIGHTHOUSE_PREFETCH_LIBRARIES");
    if (env && strcmp(env, "0") == 0) return;
    static bool tried;
    pthread_mutex_lock(&lock);
    if (!tried) {
        tried = true;
        begin_locked(cu);
    }
    pthread_mutex_unlock(&lock);
}

void lh_cudnn_prefetch_yield(void) { atomic_store(&stop, true); }

__attribute__((destructor)) static void prefetch_end(void) {
    atomic_store(&stop, true);
    if (started) pthread_join(thread, NULL);
    started = false;
}
