/* cuda_verbose.c - the verbose lines of the CUDA backend (cuda_verbose.h). */
#include "cuda_verbose.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "cudnn_api.h" /* lh_clock_us */

static int64_t loaded_us;

/* The origin of the lines' times: when the loader ran the library's constructors. */
__attribute__((constructor)) static void mark_loaded(void) { loaded_us = lh_clock_us(); }

bool lh_cuda_verbose(void) { return getenv("LIGHTHOUSE_CUDA_VERBOSE") != NULL; }

void lh_cuda_say(const char *fmt, ...) {
    if (!lh_cuda_verbose()) return;
    char line[2048];
    int n = snprintf(line, sizeof line, "liblighthouse: [%.1f ms] ",
                     (double)(lh_clock_us() - loaded_us) / 1e3);
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && n < (int)sizeof line) vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", line);
}
