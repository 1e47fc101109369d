/*
 * cache.c - lhc_compile: memory cache, then disk cache, then MLIR.
 *
 * The key of a kernel hashes everything that can change its PTX: the specialised text (the
 * template with the shared pieces it includes and its constants pasted in), the chip, the PTX
 * features, the pass pipeline, the LLVM version and the library version. So a new library or LLVM never reuses stale PTX, and no manual invalidation exists.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "compiler_internal.h"
#include "runtime.h"

#define LHC_CACHE_DIR_CAP 1024

/* An entry is listed from the moment one thread starts to build it, so that a thread asking
 * for the same kernel meanwhile waits for it instead of running MLIR a second time; the build
 * itself runs without the lock, so different kernels compile side by side. */
typedef struct cache_entry {
    char key[33];
    int ready;              /* 0 while its builder runs (ptx and kernel not yet valid) */
    char *ptx;
    char **names;
    lhc_kernel kernel;
    struct cache_entry *next;
} cache_entry;

struct lhc_cache {
    pthread_mutex_t lock;
    pthread_cond_t built;   /* signalled when an entry becomes ready or its build fails */
    cache_entry *entries;
    int disk_enabled;
    int dir_is_default;
    int warned;             /* the one sentence about an untrusted directory or entry is out */
    char dir[LHC_CACHE_DIR_CAP];
    lhc_cache_stats stats;
};

lh_status lhc_cache_create(lhc_cache **out) {
    if (!out) return lh_fail(LH_ERROR_NULL_POINTER, "lhc_cache_create: out is NULL");
    lhc_cache *c = calloc(1, sizeof *c);
    if (!c) return lh_fail(LH_ERROR_OUT_OF_HOST_MEMORY, "kernel cache: out of host memory");
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->built, NULL);
    c->disk_enabled = 1;
    c->dir_is_default = 1;
    lhc_default_cache_dir(c->dir, sizeof c->dir);
    *out = c;
    return LH_OK;
}

static void entry_free(cache_entry *e) {
    free(e->ptx);
    free(e->names);
    free(e);
}

void lhc_cache_destroy(lhc_cache *c) {
    if (!c) return;
    for (cache_entry *e = c->entries, *next; e; e = next) {
        next = e->next;
        entry_free(e);
    }
    pthread_cond_destroy(&c->built);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

lh_status lhc_cache_set_dir(lhc_cache *c, const char *dir) {
    if (dir && strlen(dir) >= LHC_CACHE_DIR_CAP)
        return lh_fail(LH_ERROR_INVALID_VALUE, "kernel cache directory is %zu bytes long (at most %d)",
                       strlen(dir), LHC_CACHE_DIR_CAP - 1);
    pthread_mutex_lock(&c->lock);
    c->dir_is_default = !dir || !*dir;
    if (c->dir_is_default) lhc_default_cache_dir(c->dir, sizeof c->dir);
    else snprintf(c->dir, sizeof c->dir, "%s", dir);
    pthread_mutex_unlock(&c->lock);
    return LH_OK;
}

void lhc_cache_set_disk_enabled(lhc_cache *c, int enabled) {
    pthread_mutex_lock(&c->lock);
    c->disk_enabled = enabled != 0;
    pthread_mutex_unlock(&c->lock);
}

const char *lhc_cache_dir(const lhc_cache *c) { return c->dir; }

void lhc_cache_get_stats(const lhc_cache *c, lhc_cache_stats *out) {
    pthread_mutex_lock((pthread_mutex_t *)&c->lock);
    *out = c->stats;
    pthread_mutex_unlock((pthread_mutex_t *)&c->lock);
}

/* ---- one kernel ----------------------------------------------------------------------------- */

static lh_status check_chip(const char *chip) {
    /* Only the shape is checked here (it is pasted into MLIR text); LLVM judges the name. */
    size_t n = strlen(chip);
    int ok = n >= 4 && n < 16 && strncmp(chip, "sm_", 3) == 0;
    for (size_t i = 3; ok && i < n; i++)
        ok = (chip[i] >= '0' && chip[i] <= '9') || (chip[i] >= 'a' && chip[i] <= 'z');
    if (!ok)
        return lh_fail(LH_ERROR_INVALID_VALUE,
                       "chip must read sm_<number>[suffix], e.g. sm_90 or sm_100a (got \"%s\")", chip);
    return LH_OK;
}

/* `text` is the specialised kernel: the template with its shared pieces and constants pasted in. */
static void compute_key(const char *kernel, const char *text, const char *chip, char out[33]) {
    char version[32];
    snprintf(version, sizeof version, "%d.%d.%d", LH_VERSION_MAJOR, LH_VERSION_MINOR, LH_VERSION_PATCH);
    lhc_hash128 h;
    lhc_hash128_init(&h);
    const char *parts[] = {"liblighthouse kernel v2", version, lhc_llvm_version(), lhc_pipeline_text(),
                           LHC_PTX_FEATURES, chip, kernel, text};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) lhc_hash128_string(&h, parts[i]);
    lhc_hash128_hex(&h, out);
}

/* The ".entry NAME(" lines of the PTX, so the runtime needs no list of its own. The names are
 * copied, NUL-terminated, into the same allocation after the PTX's own terminator. */
static int list_entries(cache_entry *e) {
    size_t ptx_len = strlen(e->ptx), names_len = 0;
    int count = 0;
    for (const char *s = e->ptx; (s = strstr(s, ".entry ")); s += 7) {
        names_len += strcspn(s + 7, "( \t\n") + 1;
        count++;
    }
    char *grown = realloc(e->ptx, ptx_len + 1 + names_len);
    if (!grown) return -1;
    e->ptx = grown;
    e->names = calloc((size_t)count + 1, sizeof *e->names);
    if (!e->names) return -1;
    char *at = grown + ptx_len + 1;
    int i = 0;
    for (const char *s = grown; i < count && (s = strstr(s, ".entry ")); s += 7) {
        size_t n = strcspn(s + 7, "( \t\n");
        memcpy(at, s + 7, n);
        at[n] = '\0';
        e->names[i++] = at;
        at += n + 1;
    }
    e->kernel.ptx = grown;
    e->kernel.ptx_size = ptx_len;
    e->kernel.num_entries = count;
    e->kernel.entries = (const char *const *)e->names;
    e->kernel.key = e->key;
    return 0;
}

static cache_entry *find_entry(lhc_cache *c, const char *key) {
    for (cache_entry *e = c->entries; e; e = e->next)
        if (strcmp(e->key, key) == 0) return e;
    return NULL;
}

/* A directory or an entry that another user can have written is not used, and the compile
 * goes on without it; the first time a cache meets one it says so in one line on stderr (the
 * call succeeds, so the error channel would not carry it). */
static void untrusted(lhc_cache *c, const char *why) {
    c->stats.disk_unsafe++;
    if (c->warned) return;
    c->warned = 1;
    fprintf(stderr, "liblighthouse: not using the kernel cache here: %s (kernels are compiled "
                    "without it)\n", why);
}

static void unlink_entry(lhc_cache *c, cache_entry *gone) {
    for (cache_entry **at = &c->entries; *at; at = &(*at)->next)
        if (*at == gone) {
            *at = gone->next;
            return;
        }
}

/* Disk, then MLIR; runs without the lock. The disk part as the cache is configured when the
 * build starts (copied under the lock by the caller: set_dir may run meanwhile). What it met is
 * counted in `seen` (hits, rejects, errors, unsafe) and `why` holds the sentence of the first
 * untrusted directory or entry; the caller adds both to the cache's under the lock. */
static lh_status load_or_build(const char *dir, const char *kernel, const char *mlir,
                               const char *chip, const char *key, char **ptx, lhc_cache_stats *seen,
                               char *why, size_t why_cap) {
    size_t size = 0;
    char reason[LHC_CACHE_DIR_CAP + 160];
    if (dir[0]) {
        int r = lhc_disk_read(dir, kernel, key, 1, ptx, &size, reason, sizeof reason);
        if (r > 0 && strstr(*ptx, ".entry ")) {
            seen->disk_hits++;
            return LH_OK;
        }
        if (r > 0) free(*ptx);
        *ptx = NULL;
        if (r == -2) {
            if (!seen->disk_unsafe++) snprintf(why, why_cap, "%s", reason);
        } else if (r != 0) {
            seen->disk_rejects++;
        }
    }
    lh_status st = lhc_mlir_to_ptx(kernel, mlir, chip, ptx);
    if (st != LH_OK) return st;
    seen->compiles++;
    if (dir[0]) {
        int w = lhc_disk_write(dir, kernel, key, *ptx, strlen(*ptx), reason, sizeof reason);
        if (w == -2) {
            if (!seen->disk_unsafe++) snprintf(why, why_cap, "%s", reason);
        } else if (w != 0) {
            seen->disk_errors++;
        }
    }
    return LH_OK;
}

/* Adds what one build met to the cache's counters; the lock is held. */
static void count_build(lhc_cache *c, const lhc_cache_stats *seen, const char *why) {
    c->stats.disk_hits += seen->disk_hits;
    c->stats.compiles += seen->compiles;
    c->stats.disk_rejects += seen->disk_rejects;
    c->stats.disk_errors += seen->disk_errors;
    if (seen->disk_unsafe) {
        c->stats.disk_unsafe += seen->disk_unsafe - 1;
        untrusted(c, why); /* counts one more and says why, once per cache */
    }
}

/* The entry for `key`, ready, or NULL with a fresh entry listed for this thread to build (in
 * *building; NULL when out of memory). Waits while another thread builds the same key; if that
 * build fails, this thread builds it itself (and meets the same error with its own message). */
static cache_entry *claim(lhc_cache *c, const char *key, cache_entry **building) {
    *building = NULL;
    for (;;) {
        cache_entry *e = find_entry(c, key);
        if (e && e->ready) return e;
        if (!e) break;
        pthread_cond_wait(&c->built, &c->lock);
    }
    cache_entry *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    memcpy(e->key, key, sizeof e->key);
    e->next = c->entries;
    c->entries = e;
    *building = e;
    return NULL;
}

lh_status lhc_kernel_key(const char *kernel, const char *constants, const char *chip, char key[33],
                         char **mlir) {
    const char *source = lhc_template_source(kernel);
    if (!source) return lh_fail(LH_ERROR_INVALID_VALUE, "no kernel template named \"%s\"", kernel);
    lh_status st = check_chip(chip);
    if (st != LH_OK) return st;

    lhc_constants consts;
    st = lhc_constants_parse(constants, &consts);
    if (st != LH_OK) return lh_fail_context(st, kernel);
    int user_count = consts.count;
    char target[LHC_MAX_VALUE_LEN];
    snprintf(target, sizeof target, "#nvvm.target<chip = \"%s\", features = \"%s\", O = 3>", chip,
             LHC_PTX_FEATURES);
    st = lhc_constants_add(&consts, "TARGET", target);
    if (st != LH_OK) return st;

    /* Specialised first, so that the key covers every byte MLIR would read (shared pieces
     * included) and bad constants fail the same way whether or not the kernel is cached. */
    char *text = NULL;
    st = lhc_template_expand(kernel, source, lhc_template_pieces, lhc_template_piece_total, &consts,
                             user_count, &text);
    if (st != LH_OK) return st;
    compute_key(kernel, text, chip, key);
    if (mlir) *mlir = text;
    else free(text);
    return LH_OK;
}

lh_status lhc_compile(lhc_cache *c, const char *kernel, const char *constants, const char *chip,
                      const lhc_kernel **out) {
    if (!c || !kernel || !chip || !out)
        return lh_fail(LH_ERROR_NULL_POINTER, "lhc_compile: cache, kernel, chip and out must not be NULL");
    char key[33], *mlir = NULL;
    lh_status st = lhc_kernel_key(kernel, constants, chip, key, &mlir);
    if (st != LH_OK) return st;

    pthread_mutex_lock(&c->lock);
    cache_entry *e = NULL, *found = claim(c, key, &e);
    if (found) {
        c->stats.memory_hits++;
        *out = &found->kernel;
        pthread_mutex_unlock(&c->lock);
        free(mlir);
        return LH_OK;
    }
    if (!e) {
        pthread_mutex_unlock(&c->lock);
        free(mlir);
        return lh_fail(LH_ERROR_OUT_OF_HOST_MEMORY, "kernel cache: out of host memory");
    }
    char dir[LHC_CACHE_DIR_CAP] = "";
    if (c->disk_enabled) snprintf(dir, sizeof dir, "%s", c->dir);
    pthread_mutex_unlock(&c->lock);

    lhc_cache_stats seen = {0};
    char why[LHC_CACHE_DIR_CAP + 160] = "";
    st = load_or_build(dir, kernel, mlir, chip, key, &e->ptx, &seen, why, sizeof why);
    free(mlir);
    if (st == LH_OK && list_entries(e) != 0)
        st = lh_fail(LH_ERROR_OUT_OF_HOST_MEMORY, "kernel cache: out of host memory");

    pthread_mutex_lock(&c->lock);
    count_build(c, &seen, why);
    if (st == LH_OK) {
        e->ready = 1;
        *out = &e->kernel;
    } else {
        unlink_entry(c, e);
        entry_free(e);
    }
    pthread_cond_broadcast(&c->built);
    pthread_mutex_unlock(&c->lock);
    return st;
}

/* ---- records beside the kernels --------------------------------------------------------- */

static void record_key(const char *name, const char *identity, char out[33]) {
    lhc_hash128 h;
    lhc_hash128_init(&h);
    lhc_hash128_string(&h, "liblighthouse record v1");
    lhc_hash128_string(&h, name);
    lhc_hash128_string(&h, identity);
    lhc_hash128_hex(&h, out);
}

/* The directory now, or 0 where the disk part is off (copied: set_dir may run meanwhile). */
static int record_dir(lhc_cache *c, char *dir, size_t cap) {
    pthread_mutex_lock(&c->lock);
    int on = c->disk_enabled && c->dir[0];
    if (on) snprintf(dir, cap, "%s", c->dir);
    pthread_mutex_unlock(&c->lock);
    return on;
}

static void record_untrusted(lhc_cache *c, const char *why) {
    pthread_mutex_lock(&c->lock);
    untrusted(c, why);
    pthread_mutex_unlock(&c->lock);
}

static int record_read(lhc_cache *c, const char *name, const char *identity, int text,
                       char **payload, size_t *size) {
    char dir[LHC_CACHE_DIR_CAP], key[33], why[LHC_CACHE_DIR_CAP + 160];
    if (!c || !record_dir(c, dir, sizeof dir)) return 0;
    record_key(name, identity, key);
    int r = lhc_disk_read(dir, name, key, text, payload, size, why, sizeof why);
    if (r == -2) record_untrusted(c, why);
    return r > 0 ? 1 : 0;
}

int lhc_cache_record_read(lhc_cache *c, const char *name, const char *identity, char **payload,
                          size_t *size) {
    return record_read(c, name, identity, 1, payload, size);
}

int lhc_cache_record_read_bytes(lhc_cache *c, const char *name, const char *identity,
                                char **payload, size_t *size) {
    return record_read(c, name, identity, 0, payload, size);
}

int lhc_cache_records_enabled(lhc_cache *c) {
    char dir[LHC_CACHE_DIR_CAP];
    return c && record_dir(c, dir, sizeof dir);
}

int lhc_cache_records_writable(lhc_cache *c) {
    char dir[LHC_CACHE_DIR_CAP];
    if (!c || !record_dir(c, dir, sizeof dir)) return 0;
    if (access(dir, W_OK | X_OK) == 0) return 1;
    return errno == ENOENT; /* made by the first write */
}

int lhc_cache_record_write(lhc_cache *c, const char *name, const char *identity,
                           const char *payload, size_t size) {
    char dir[LHC_CACHE_DIR_CAP], key[33], why[LHC_CACHE_DIR_CAP + 160];
    if (!c || !record_dir(c, dir, sizeof dir)) return -1;
    record_key(name, identity, key);
    int w = lhc_disk_write(dir, name, key, payload, size, why, sizeof why);
    if (w == -2) record_untrusted(c, why);
    return w == 0 ? 0 : -1;
}
