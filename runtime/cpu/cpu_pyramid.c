/*
 * cpu_pyramid.c - the geometry every stage shares (docs/spec.md section 1): where a pyramid
 * position lies, the mean of its window, and the tokens of one head of a full-length tensor.
 *
 * The pyramid itself is never stored: a pooled entry is the mean of its window, computed when
 * it is gathered. Only the selected entries are ever pooled, so this reads each token about once
 * per level instead of writing and re-reading an S_total x D copy.
 */
#include <inttypes.h>
#include <string.h>

#include "cpu_internal.h"

void lh_cpu_locate(const lh_config *cfg, int64_t pos, int64_t *level, int64_t *index) {
    int64_t l = cfg->levels - 1;
    while (l > 0 && pos < cfg->level_off[l])
        l--;
    *level = l;
    *index = pos - cfg->level_off[l];
}

void lh_cpu_pool_entry(const lh_config *cfg, const float *x, int64_t heads, int64_t b, int64_t h,
                       int64_t pos, float *out) {
    int64_t l, i, D = cfg->head_dim;
    lh_cpu_locate(cfg, pos, &l, &i);
    int64_t f = cfg->level_width[l];
    const float *row = x + lh_tensor_offset(cfg, heads, b, i * f, h, 0);
    int64_t stride = lh_cpu_token_stride(cfg, heads);
    memcpy(out, row, (size_t)D * sizeof(float));
    for (int64_t t = 1; t < f; t++) {
        const float *r = row + t * stride;
        for (int64_t d = 0; d < D; d++)
            out[d] += r[d];
    }
    if (f > 1) {
        /* f is a power of two, so scaling by 1/f is exact and equals division. */
        float inv = 1.0f / (float)f;
        for (int64_t d = 0; d < D; d++)
            out[d] *= inv;
    }
}

/* Sets every token of head h of batch b of x (which has `heads` heads) to zero. */
void lh_cpu_zero_head(const lh_config *cfg, float *x, int64_t heads, int64_t b, int64_t h) {
    int64_t D = cfg->head_dim, stride = lh_cpu_token_stride(cfg, heads);
    float *row = x + lh_tensor_offset(cfg, heads, b, 0, h, 0);
    if (stride == D) {
        memset(row, 0, (size_t)(cfg->seq_len * D) * sizeof(float));
        return;
    }
    for (int64_t t = 0; t < cfg->seq_len; t++, row += stride)
        memset(row, 0, (size_t)D * sizeof(float));
}

/* Adds w * g[0..D) to tokens [t0, t1) (clipped to N) of head h of x. */
void lh_cpu_add_window(const lh_config *cfg, float *x, int64_t heads, int64_t b, int64_t h,
                       int64_t t0, int64_t t1, const float *g, float w) {
    int64_t D = cfg->head_dim, stride = lh_cpu_token_stride(cfg, heads);
    if (t1 > cfg->seq_len)
        t1 = cfg->seq_len;
    float *row = x + lh_tensor_offset(cfg, heads, b, t0, h, 0);
    for (int64_t t = t0; t < t1; t++, row += stride)
        for (int64_t d = 0; d < D; d++)
            row[d] += w * g[d];
}

lh_status lh_cpu_check_indices(const lh_config *cfg, const int32_t *indices) {
    int64_t n = cfg->batch * cfg->heads * cfg->s_sel;
    for (int64_t i = 0; i < n; i++)
        if (indices[i] < 0 || indices[i] >= cfg->s_total)
            return lh_fail(LH_ERROR_INVALID_VALUE,
                           "indices[%" PRId64 "] = %" PRId32 " is not a pyramid position "
                           "(0 <= position < S_total = %" PRId64 ")",
                           i, indices[i], cfg->s_total);
    return LH_OK;
}
