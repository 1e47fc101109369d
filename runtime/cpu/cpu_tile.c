/*
 * cpu_tile.c - the small dense kernels that attention is made of, on blocks of at most
 * LH_CPU_BLOCK rows and columns: C = A B^T with B given transposed, Acc += P V, and a fast exp.
 *
 * The kernels (cpu_tile_kernels.h) are fixed-size loops over register tiles that GCC vectorises.
 * They are compiled twice, for any CPU (here) and for AVX2 + FMA (cpu_tile_avx2.c, x86-64 only),
 * and lh_cpu_tiles_get picks the best copy the running CPU supports: the AVX2 copy is about twice
 * as fast, and the library still loads and runs on any x86-64.
 */
#include "cpu_internal.h"

#define TILE_FN(name) tile_##name##_generic
#define TILE_TABLE lh_cpu_tiles_generic
#include "cpu_tile_kernels.h"

#ifdef LH_CPU_HAVE_AVX2
#include <pthread.h>

extern const lh_cpu_tiles lh_cpu_tiles_avx2;

static pthread_once_t tiles_once = PTHREAD_ONCE_INIT;
static const lh_cpu_tiles *tiles_best = &lh_cpu_tiles_generic;

/* Once per process: __builtin_cpu_init writes shared state, so it must not race. */
static void pick_tiles(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        tiles_best = &lh_cpu_tiles_avx2;
}
#endif

const lh_cpu_tiles *lh_cpu_tiles_get(void) {
#ifdef LH_CPU_HAVE_AVX2
    pthread_once(&tiles_once, pick_tiles);
    return tiles_best;
#else
    return &lh_cpu_tiles_generic;
#endif
}
