/*
 * test_compiler_kernels.c - the kernel descriptors (compiler/kernels.h) against the templates:
 * every descriptor's argument list is its template's gpu.func signature, name for name and type
 * for type, every kernel of every template has a descriptor, and the requests of a plan name
 * exactly the templates the descriptors know. A kernel whose arguments change without its
 * descriptor fails here, on any machine, before a GPU could launch it with the old list.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compiler.h"
#include "kernels.h"
#include "test_compiler_util.h"

/* The parameter list of `gpu.func @entry(...)` in `source`, white space folded to one space;
 * NULL if the template has no such kernel. */
static char *signature_of(const char *source, const char *entry) {
    char pattern[160];
    snprintf(pattern, sizeof pattern, "gpu.func @%s(", entry);
    const char *start = strstr(source, pattern);
    if (!start) return NULL;
    start += strlen(pattern);
    const char *end = strchr(start, ')');
    if (!end) return NULL;
    char *out = malloc((size_t)(end - start) + 1);
    size_t n = 0;
    for (const char *p = start; p < end; p++) {
        int space = *p == ' ' || *p == '\n' || *p == '\t';
        if (space && (n == 0 || out[n - 1] == ' ')) continue;
        out[n++] = space ? ' ' : *p;
    }
    while (n && out[n - 1] == ' ') n--;
    out[n] = '\0';
    return out;
}

START_TEST(descriptors_match_template_signatures) {
    for (int id = 0; id < LHK_KERNEL_COUNT; id++) {
        const lhk_desc *d = &lhk_kernels[id];
        ck_assert_ptr_nonnull(d->entry);
        ck_assert_int_le(d->nargs, LHK_MAX_ARGS);
        const char *source = lhc_template_source(lhk_template_names[d->template_id]);
        ck_assert_msg(source != NULL, "%s: no template %s", d->entry,
                      lhk_template_names[d->template_id]);
        char *got = signature_of(source, d->entry);
        ck_assert_msg(got != NULL, "template %s has no gpu.func @%s",
                      lhk_template_names[d->template_id], d->entry);
        char want[2048];
        snprintf(want, sizeof want, "%s", d->signature);
        size_t len = strlen(want);
        ck_assert_int_ge(len, 2);
        want[len - 2] = '\0'; /* the descriptor's list ends in ", " */
        ck_assert_msg(strcmp(got, want) == 0, "%s:\n  template   %s\n  descriptor %s", d->entry,
                      got, want);
        int commas = 0;
        for (const char *p = got; *p; p++) commas += *p == ',';
        ck_assert_int_eq(commas + 1, d->nargs);
        free(got);
    }
}
END_TEST

START_TEST(every_template_kernel_has_a_descriptor) {
    for (int t = 0; t < LHK_TEMPLATE_COUNT; t++) {
        ck_assert_int_eq(lhk_template_find(lhk_template_names[t]), t);
        const char *source = lhc_template_source(lhk_template_names[t]);
        ck_assert_msg(source != NULL, "no template %s", lhk_template_names[t]);
        for (const char *p = strstr(source, "gpu.func @"); p; p = strstr(p + 1, "gpu.func @")) {
            char entry[128];
            size_t n = strcspn(p + 10, "(");
            ck_assert_int_lt(n, sizeof entry);
            memcpy(entry, p + 10, n);
            entry[n] = '\0';
            int found = 0;
            for (int id = 0; id < LHK_KERNEL_COUNT; id++)
                found |= strcmp(lhk_kernels[id].entry, entry) == 0 &&
                         lhk_kernels[id].template_id == (lhk_template)t;
            ck_assert_msg(found, "%s.mlir: kernel %s has no descriptor", lhk_template_names[t],
                          entry);
        }
    }
    ck_assert_int_eq(lhk_template_find("nope"), -1);
    ck_assert_int_eq(lhk_template_find(NULL), -1);
}
END_TEST

START_TEST(requests_name_the_described_templates) {
    lhc_kernel_request req[LHC_MAX_PLAN_KERNELS + 1];
    int n = 0;
    lhc_plan_params pp = {.pooling = 4, .levels = 3, .head_dim = 128, .dtype = "bf16", .group = 1};
    ck_assert_int_eq(lhc_plan_kernels(&pp, req, &n), LH_OK);
    ck_assert_int_eq(lhc_ring_kernel("bf16", 128, &req[n++]), LH_OK);
    int seen[LHK_TEMPLATE_COUNT] = {0};
    for (int i = 0; i < n; i++) {
        int t = lhk_template_find(req[i].kernel);
        ck_assert_msg(t >= 0, "request for %s, which no descriptor names", req[i].kernel);
        seen[t]++;
        ck_assert_int_gt(req[i].block_threads, 0);
    }
    for (int t = 0; t < LHK_TEMPLATE_COUNT; t++)
        ck_assert_msg(seen[t] == 1, "template %s requested %d times", lhk_template_names[t],
                      seen[t]);
}
END_TEST

TCase *kernels_tcase(void) {
    TCase *t = tcase_create("kernel descriptors");
    tcase_add_test(t, descriptors_match_template_signatures);
    tcase_add_test(t, every_template_kernel_has_a_descriptor);
    tcase_add_test(t, requests_name_the_described_templates);
    return t;
}
