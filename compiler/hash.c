/*
 * hash.c - FNV-1a hashes: 128-bit for cache keys, 64-bit for the checksum of a cache entry.
 *
 * FNV is tiny and has no tables. The cache key does not need to resist an attacker (whoever can
 * write the cache directory can also replace the library), it needs to keep distinct inputs
 * apart, which 128 bits do with room to spare.
 */
#include <stdio.h>

#include "compiler_internal.h"

typedef unsigned __int128 u128;

static u128 to_u128(const lhc_hash128 *h) { return ((u128)h->hi << 64) | h->lo; }

static void from_u128(lhc_hash128 *h, u128 v) {
    h->hi = (uint64_t)(v >> 64);
    h->lo = (uint64_t)v;
}

void lhc_hash128_init(lhc_hash128 *h) {
    /* FNV-128 offset basis 0x6c62272e07bb014262b821756295c58d */
    h->hi = 0x6c62272e07bb0142ULL;
    h->lo = 0x62b821756295c58dULL;
}

void lhc_hash128_update(lhc_hash128 *h, const void *data, size_t size) {
    /* FNV-128 prime 2^88 + 2^8 + 0x3b */
    const u128 prime = ((u128)1 << 88) + ((u128)1 << 8) + 0x3b;
    u128 v = to_u128(h);
    const unsigned char *p = data;
    for (size_t i = 0; i < size; i++) {
        v ^= p[i];
        v *= prime;
    }
    from_u128(h, v);
}

void lhc_hash128_string(lhc_hash128 *h, const char *s) {
    size_t n = 0;
    while (s[n]) n++;
    lhc_hash128_update(h, s, n + 1);
}

void lhc_hash128_hex(const lhc_hash128 *h, char out[33]) {
    snprintf(out, 33, "%016llx%016llx", (unsigned long long)h->hi, (unsigned long long)h->lo);
}

uint64_t lhc_hash64(const void *data, size_t size) {
    uint64_t v = 0xcbf29ce484222325ULL;
    const unsigned char *p = data;
    for (size_t i = 0; i < size; i++) {
        v ^= p[i];
        v *= 0x100000001b3ULL;
    }
    return v;
}
