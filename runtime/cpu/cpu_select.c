/*
 * cpu_select.c - the A/B cascade and the order of the sub-sequence (docs/spec.md sections 2-3).
 *
 * One task per (batch, head, tile). The cascade runs from the coarsest level down; every level
 * keeps its candidate list in position order and, for each refined candidate, its rank among the
 * refined ones. Because the next level's candidates are the children of the refined entries in
 * position order, the children of the refined candidate of rank r are exactly the next level's
 * candidates r*p .. r*p+p-1. A depth-first walk over these lists (children before their refined
 * parent) then emits the entries in the order of docs/spec.md's integer key without any sort.
 */
#include <string.h>

#include "cpu_internal.h"

/* Largest candidate list of any level of one tile. */
static int64_t max_candidates(const lh_config *cfg) {
    int64_t refined = LH_TILE_REFINED * cfg->pooling;
    return cfg->tile_len > refined ? cfg->tile_len : refined;
}

size_t lh_cpu_select_scratch_bytes(const lh_config *cfg) {
    if (cfg->mode == LH_MODE_DENSE)
        return 0;
    /* Per level: candidates (int32) and ranks (int32); one mark byte per candidate. */
    size_t per = (size_t)max_candidates(cfg);
    return lh_cpu_round64(per * (size_t)cfg->levels * 2 * sizeof(int32_t)) + lh_cpu_round64(per);
}

/* The order of scores as an unsigned integer, as the GPU's select kernel ranks them: numbers in
 * their order (+0 and -0 equal), a NaN with the sign bit clear above +inf and one with it set
 * below -inf. A total order, so NaN scores still give a valid selection (the same one on both
 * backends for the same bits). */
static inline uint32_t order_key(float x) {
    uint32_t b;
    memcpy(&b, &x, sizeof b);
    if ((b & 0x7fffffffu) == 0) return 0x80000000u;
    return (b & 0x80000000u) ? ~b : b | 0x80000000u;
}

/* a beats b when its score is higher, or equal at a lower position (the reference's stable sort
 * over candidates in position order). */
static inline int beats(float sa, int64_t ia, float sb, int64_t ib) {
    uint32_t ka = order_key(sa), kb = order_key(sb);
    return ka > kb || (ka == kb && ia < ib);
}

/* Marks with `mark` the LH_SET_SIZE best unmarked candidates by `score` (candidates are
 * level-local indices in increasing order; score is the level's slice of the scores). Keeps the
 * best so far in a short sorted list: O(n * 64) at worst, O(n) for typical inputs. */
static void mark_best(const int32_t *cand, int64_t n, const float *score, uint8_t *marks,
                      uint8_t mark) {
    int64_t best[LH_SET_SIZE];  /* positions in cand, best first */
    int count = 0;
    for (int64_t c = 0; c < n; c++) {
        if (marks[c])
            continue;
        float s = score[cand[c]];
        if (count == LH_SET_SIZE) {
            int64_t last = best[count - 1];
            if (!beats(s, cand[c], score[cand[last]], cand[last]))
                continue;
            count--;
        }
        int j = count;
        while (j > 0 && beats(s, cand[c], score[cand[best[j - 1]]], cand[best[j - 1]])) {
            best[j] = best[j - 1];
            j--;
        }
        best[j] = c;
        count++;
    }
    for (int j = 0; j < count; j++)
        marks[best[j]] = mark;
}

typedef struct tile_state {
    const lh_config *cfg;
    int32_t *cand[LH_MAX_LEVELS];   /* level-local indices, increasing */
    int32_t *rank[LH_MAX_LEVELS];   /* rank among refined, or -1 when kept coarse */
    int64_t count[LH_MAX_LEVELS];
    int32_t *out;
    int64_t emitted;
} tile_state;

/* Emits candidates [lo, hi) of `level` in depth-first order: a refined entry after its children. */
static void emit(tile_state *st, int64_t level, int64_t lo, int64_t hi) {
    int64_t p = st->cfg->pooling, off = st->cfg->level_off[level];
    for (int64_t c = lo; c < hi; c++) {
        int32_t r = level > 0 ? st->rank[level][c] : -1;
        if (r >= 0)
            emit(st, level - 1, (int64_t)r * p, (int64_t)r * p + p);
        st->out[st->emitted++] = (int32_t)(off + st->cand[level][c]);
    }
}

typedef struct select_job {
    const lh_cpu_plan *plan;
    const float *scores_q, *scores_k;
    int32_t *indices;
    char *scratch;
} select_job;

static void select_task(void *arg, int64_t task, int tid) {
    const select_job *job = arg;
    const lh_config *cfg = &job->plan->cfg;
    int64_t T = cfg->tiles, L = cfg->levels, p = cfg->pooling;
    int64_t bh = task / T, t = task % T;
    int64_t b = bh / cfg->heads, h = bh % cfg->heads, hk = h / lh_cpu_group(cfg);
    const float *sq = job->scores_q + bh * cfg->s_total;
    const float *sk = job->scores_k + (b * cfg->kv_heads + hk) * cfg->s_total;

    int64_t maxc = max_candidates(cfg);
    char *scratch = job->scratch + (size_t)tid * job->plan->scratch_bytes;
    int32_t *ints = (int32_t *)scratch;
    uint8_t *marks = (uint8_t *)(scratch + lh_cpu_round64((size_t)maxc * (size_t)L * 2 * sizeof(int32_t)));
    tile_state st = {.cfg = cfg};
    for (int64_t l = 0; l < L; l++) {
        st.cand[l] = ints + 2 * l * maxc;
        st.rank[l] = ints + (2 * l + 1) * maxc;
    }

    int64_t c = L - 1;
    st.count[c] = cfg->tile_len;
    for (int64_t i = 0; i < cfg->tile_len; i++)
        st.cand[c][i] = (int32_t)(t * cfg->tile_len + i);
    for (int64_t l = c; l >= 1; l--) {
        int64_t n = st.count[l];
        const float *lq = sq + cfg->level_off[l], *lk = sk + cfg->level_off[l];
        memset(marks, 0, (size_t)n);
        mark_best(st.cand[l], n, lq, marks, 1);   /* set A: highest query scores */
        mark_best(st.cand[l], n, lk, marks, 2);   /* set B: highest key scores outside A */
        int64_t refined = 0, next = 0;
        for (int64_t i = 0; i < n; i++) {
            if (marks[i]) {
                st.rank[l][i] = (int32_t)refined++;
                for (int64_t j = 0; j < p; j++)
                    st.cand[l - 1][next++] = (int32_t)(st.cand[l][i] * p + j);
            } else {
                st.rank[l][i] = -1;
            }
        }
        st.count[l - 1] = next;
    }
    int64_t per_tile = cfg->tile_len + (L - 1) * LH_TILE_REFINED * p;
    st.out = job->indices + bh * cfg->s_sel + t * per_tile;
    emit(&st, c, 0, st.count[c]);
}

void lh_cpu_select(const lh_cpu_plan *plan, const float *scores_q, const float *scores_k,
                   int32_t *indices, void *scratch) {
    const lh_config *cfg = &plan->cfg;
    select_job job = {plan, scores_q, scores_k, indices, scratch};
    lh_cpu_parallel_for(plan->nthreads, cfg->batch * cfg->heads * cfg->tiles, select_task, &job);
}

lh_status lh_cpu_select_stage(void *plan, const lh_chunk *ch, void *stream) {
    (void)stream;
    lh_cpu_select(((const lh_cpu_plan *)plan)->chunk, ch->scores_q, ch->scores_k, ch->indices,
                  ch->scratch);
    return LH_OK;
}

lh_status lh_cpu_select_entry(void *plan_state, const float *scores_q, const float *scores_k,
                              int32_t *indices, void *workspace, void *stream) {
    (void)stream;
    lh_cpu_select(plan_state, scores_q, scores_k, indices, workspace);
    return LH_OK;
}
