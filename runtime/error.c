/* error.c - the thread-local "last error" sentence behind lh_last_error(). */
#include <stdio.h>
#include <string.h>

#include "runtime.h"

/* Large enough for a sentence plus an MLIR or cuDNN diagnostic appended to it. */
#define LH_ERROR_CAPACITY 4096

static _Thread_local char last_error[LH_ERROR_CAPACITY];

lh_status lh_fail(lh_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return status;
}

lh_status lh_fail_context(lh_status status, const char *what) {
    char previous[LH_ERROR_CAPACITY];
    memcpy(previous, last_error, sizeof previous);
    /* Keep the prefix and as much of the old message as fits. */
    snprintf(last_error, sizeof last_error, "%s: %.*s", what, (int)(sizeof last_error / 2), previous);
    return status;
}

void lh_clear_error(void) { last_error[0] = '\0'; }

const char *lh_error_message(void) { return last_error; }
