/*
 * cuda_verbose.h - LIGHTHOUSE_CUDA_VERBOSE: what a CUDA plan chose and where its creation spent
 * its time, one line each on stderr.
 *
 * Every line carries the time since the library was loaded, on one clock for all threads, so the
 * lines of a plan's two sides (our kernels, cuDNN's) and of the backward's builder thread read as
 * one timeline (docs/environment.md).
 */
#ifndef LH_CUDA_VERBOSE_H
#define LH_CUDA_VERBOSE_H

#include <stdbool.h>

/* Whether LIGHTHOUSE_CUDA_VERBOSE is set (any value). */
bool lh_cuda_verbose(void);

/* Where verbose: "liblighthouse: [T ms] <text>" and a newline on stderr in one write (lines of
 * several threads do not interleave), T the milliseconds since the library was loaded. */
void lh_cuda_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif /* LH_CUDA_VERBOSE_H */
