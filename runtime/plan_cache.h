/*
 * plan_cache.h - values that are expensive to build (cuDNN execution plans), kept by a context
 * under a key of 64-bit words and shared by every plan of that context that asks for the same
 * key. A value lives while any plan holds it and, once released, stays for the next plan until
 * the cache is full (the least recently used released value goes first) or the cache is
 * destroyed with its context.
 *
 * The cache does no locking: its owner holds a lock around every call (cuda_backend.c).
 */
#ifndef LH_PLAN_CACHE_H
#define LH_PLAN_CACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "lighthouse.h"

#define LH_PLAN_KEY_WORDS 20
#define LH_PLAN_CACHE_CAPACITY 64

/* A key: every word that decides the value, unused words 0 (compared word by word, so a key
 * built from a struct never depends on its padding). */
typedef struct lh_plan_key {
    int64_t w[LH_PLAN_KEY_WORDS];
} lh_plan_key;

typedef struct lh_plan_cache_entry {
    lh_plan_key key;
    void *value;
    int refs;          /* plans holding the value now */
    uint64_t last_use; /* the cache's clock at the last acquire or insert */
} lh_plan_cache_entry;

typedef struct lh_plan_cache {
    lh_plan_cache_entry entries[LH_PLAN_CACHE_CAPACITY];
    int count;
    uint64_t clock;
    void (*destroy)(void *value); /* frees a value the cache drops */
} lh_plan_cache;

void lh_plan_cache_init(lh_plan_cache *c, void (*destroy)(void *value));
/* Drops every value, held or not (the owner is being destroyed: no plan holds one any more). */
void lh_plan_cache_clear(lh_plan_cache *c);

/* The value under `key`, now held once more by the caller; NULL if the cache has none. */
void *lh_plan_cache_acquire(lh_plan_cache *c, const lh_plan_key *key);
/* Keeps `value` under `key`, held once by the caller. A full cache drops its least recently used
 * released value to make room; if every value is held, `value` is not kept and false is returned
 * (the caller then owns it alone and destroys it itself). */
bool lh_plan_cache_insert(lh_plan_cache *c, const lh_plan_key *key, void *value);
/* The caller no longer holds `value`. false if the cache does not know it (the caller owns it). */
bool lh_plan_cache_release(lh_plan_cache *c, void *value);

#endif /* LH_PLAN_CACHE_H */
