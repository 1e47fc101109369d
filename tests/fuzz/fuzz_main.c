/*
 * fuzz_main.c - a seeded driver for the fuzz target where libFuzzer is not at hand (GCC builds):
 * the same command line as a libFuzzer program, the part of it used here.
 *
 *   fuzz_abi [-max_total_time=S] [-runs=N] [-seed=N] [CORPUS_DIR_OR_FILE ...]
 *
 * Every corpus input runs once; then, until S seconds or N runs have passed (-runs=0: the corpus
 * only), inputs made from the corpus by random mutations (flipped bits, bytes changed, inserted
 * or removed, a splice of two inputs) or from scratch. The seed is printed (from the clock
 * unless given), so a run can be repeated. An input that breaks a promise or trips a sanitizer
 * aborts the program; the handler of SIGABRT first writes it to ./crash-<seed>-<run>.
 */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_INPUT_MAX 1024
#define MAX_CORPUS 4096

typedef struct input {
    uint8_t *data;
    size_t size;
} input;

static input corpus[MAX_CORPUS];
static int corpus_size;
static uint64_t rng, seed;
static uint8_t current[FUZZ_INPUT_MAX];
static size_t current_size;
static long long runs_done;

static uint64_t next(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return rng;
}

static void on_abort(int sig) {
    char name[96];
    int n = snprintf(name, sizeof name, "crash-%llu-%lld", (unsigned long long)seed, runs_done);
    if (n > 0) {
        int fd = open(name, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            if (write(fd, current, current_size) < 0) { /* nothing more to do in a handler */ }
            close(fd);
        }
        static const char msg[] = "fuzz_abi: the failing input is in ./";
        if (write(2, msg, sizeof msg - 1) < 0 || write(2, name, (size_t)n) < 0 || write(2, "\n", 1) < 0) {}
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

static void add_file(const char *path) {
    if (corpus_size == MAX_CORPUS) return;
    FILE *f = fopen(path, "rb");
    if (!f) return;
    uint8_t *buf = malloc(FUZZ_INPUT_MAX);
    size_t n = fread(buf, 1, FUZZ_INPUT_MAX, f);
    fclose(f);
    corpus[corpus_size++] = (input){buf, n};
}

static void add_path(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "fuzz_abi: %s: no such file or directory\n", path);
        exit(2);
    }
    if (!S_ISDIR(st.st_mode)) {
        add_file(path);
        return;
    }
    DIR *d = opendir(path);
    struct dirent *e;
    char file[4096];
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        snprintf(file, sizeof file, "%s/%s", path, e->d_name);
        add_file(file);
    }
    if (d) closedir(d);
}

static void run_current(void) {
    /* a copy of exactly current_size bytes, so that reading past the input is caught */
    uint8_t *copy = malloc(current_size ? current_size : 1);
    memcpy(copy, current, current_size);
    LLVMFuzzerTestOneInput(copy, current_size);
    free(copy);
    runs_done++;
}

/* A new input in `current`: a mutation of a corpus input, a splice of two, or random bytes. */
static void mutate(void) {
    uint64_t how = next() % 8;
    if (corpus_size == 0 || how == 0) {
        current_size = next() % 256;
        for (size_t i = 0; i < current_size; i++) current[i] = (uint8_t)next();
        return;
    }
    const input *a = &corpus[next() % (uint64_t)corpus_size];
    memcpy(current, a->data, a->size);
    current_size = a->size;
    if (how == 1) {   /* splice: a prefix of a, then a suffix of b */
        const input *b = &corpus[next() % (uint64_t)corpus_size];
        size_t cut = current_size ? next() % current_size : 0, from = b->size ? next() % b->size : 0;
        size_t take = b->size - from < FUZZ_INPUT_MAX - cut ? b->size - from : FUZZ_INPUT_MAX - cut;
        memcpy(current + cut, b->data + from, take);
        current_size = cut + take;
        return;
    }
    int edits = 1 + (int)(next() % 6);
    for (int e = 0; e < edits; e++) {
        uint64_t kind = next() % 4, at = current_size ? next() % current_size : 0;
        if (kind == 0 && current_size) current[at] ^= (uint8_t)(1u << (next() % 8));
        else if (kind == 1 && current_size) current[at] = (uint8_t)next();
        else if (kind == 2 && current_size < FUZZ_INPUT_MAX) {
            memmove(current + at + 1, current + at, current_size - at);
            current[at] = (uint8_t)next();
            current_size++;
        } else if (current_size) {
            memmove(current + at, current + at + 1, current_size - at - 1);
            current_size--;
        }
    }
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    double seconds = 10.0;
    long long max_runs = -1;
    seed = (uint64_t)time(NULL) * 2654435761u + (uint64_t)getpid();
    for (int i = 1; i < argc; i++) {
        if (!strncmp(argv[i], "-max_total_time=", 16)) seconds = atof(argv[i] + 16);
        else if (!strncmp(argv[i], "-runs=", 6)) max_runs = atoll(argv[i] + 6);
        else if (!strncmp(argv[i], "-seed=", 6)) seed = strtoull(argv[i] + 6, NULL, 10);
        else if (argv[i][0] == '-') continue;   /* libFuzzer flags this driver does not have */
        else add_path(argv[i]);
    }
    rng = seed ? seed : 1;
    signal(SIGABRT, on_abort);
    printf("fuzz_abi (seeded driver): seed %llu, %d corpus inputs\n", (unsigned long long)seed,
           corpus_size);
    fflush(stdout);
    double t0 = now();
    for (int i = 0; i < corpus_size; i++) {
        memcpy(current, corpus[i].data, corpus[i].size);
        current_size = corpus[i].size;
        run_current();
    }
    long long replayed = runs_done;
    while ((max_runs < 0 || runs_done < max_runs) && now() - t0 < seconds) {
        mutate();
        run_current();
    }
    printf("fuzz_abi: %lld runs (%lld corpus replays) in %.1f s, seed %llu, no failure\n",
           runs_done, replayed, now() - t0, (unsigned long long)seed);
    for (int i = 0; i < corpus_size; i++) free(corpus[i].data);
    return 0;
}
