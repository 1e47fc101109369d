/* plan_cache.c - a context's cache of values shared by its plans (plan_cache.h). */
#include "plan_cache.h"

#include <string.h>

void lh_plan_cache_init(lh_plan_cache *c, void (*destroy)(void *value)) {
    memset(c, 0, sizeof *c);
    c->destroy = destroy;
}

void lh_plan_cache_clear(lh_plan_cache *c) {
    for (int i = 0; i < c->count; i++)
        if (c->destroy) c->destroy(c->entries[i].value);
    c->count = 0;
}

static bool same_key(const lh_plan_key *a, const lh_plan_key *b) {
    for (int i = 0; i < LH_PLAN_KEY_WORDS; i++)
        if (a->w[i] != b->w[i]) return false;
    return true;
}

void *lh_plan_cache_acquire(lh_plan_cache *c, const lh_plan_key *key) {
    for (int i = 0; i < c->count; i++) {
        lh_plan_cache_entry *e = &c->entries[i];
        if (!same_key(&e->key, key)) continue;
        e->refs++;
        e->last_use = ++c->clock;
        return e->value;
    }
    return NULL;
}

bool lh_plan_cache_insert(lh_plan_cache *c, const lh_plan_key *key, void *value) {
    int slot = c->count;
    if (slot == LH_PLAN_CACHE_CAPACITY) {
        slot = -1;
        for (int i = 0; i < c->count; i++)
            if (c->entries[i].refs == 0 &&
                (slot < 0 || c->entries[i].last_use < c->entries[slot].last_use))
                slot = i;
        if (slot < 0) return false;
        if (c->destroy) c->destroy(c->entries[slot].value);
    } else {
        c->count++;
    }
    c->entries[slot] = (lh_plan_cache_entry){.key = *key, .value = value, .refs = 1,
                                             .last_use = ++c->clock};
    return true;
}

bool lh_plan_cache_release(lh_plan_cache *c, void *value) {
    for (int i = 0; i < c->count; i++)
        if (c->entries[i].value == value && c->entries[i].refs > 0) {
            c->entries[i].refs--;
            return true;
        }
    return false;
}
