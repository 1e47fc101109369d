/*
 * cpu_tile_avx2.c - the dense block kernels compiled for AVX2 + FMA (this file alone is built
 * with -mavx2 -mfma, see CMakeLists.txt); used only where the CPU reports both (cpu_tile.c).
 */
#include "cpu_internal.h"

#define TILE_FN(name) tile_##name##_avx2
#define TILE_TABLE lh_cpu_tiles_avx2
#include "cpu_tile_kernels.h"
