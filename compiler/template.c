/*
 * template.c - specialisation of kernel templates by textual substitution.
 *
 * A kernel source in kernels_mlir/ is MLIR text with {{expression}} placeholders. Substituting
 * text before parsing (instead of building IR from C) keeps every kernel readable as plain MLIR
 * and lets shapes, vector widths and loop bounds be compile-time constants that LLVM folds.
 * Expressions are small integer arithmetic over the constants, so a template can say
 * {{D / 8}} or {{log2(P)}} without the runtime precomputing every derived number.
 * {{include NAME}} pastes a shared piece (kernels_mlir/shared/NAME.mlir, specialised with the
 * same constants), so kernels share helper functions instead of repeating them.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compiler_internal.h"
#include "runtime.h"

static int is_key_char(char ch, int first) {
    return ch == '_' || (ch >= 'A' && ch <= 'Z') || (!first && ch >= '0' && ch <= '9');
}

static int is_value_char(char ch) {
    return isalnum((unsigned char)ch) || ch == '_' || ch == '.' || ch == '+' || ch == '-';
}

static int find_key(const lhc_constants *c, const char *key, size_t len) {
    for (int i = 0; i < c->count; i++)
        if (strlen(c->key[i]) == len && memcmp(c->key[i], key, len) == 0) return i;
    return -1;
}

lh_status lhc_constants_add(lhc_constants *c, const char *key, const char *value) {
    if (c->count >= LHC_MAX_KEYS)
        return lh_fail(LH_ERROR_INVALID_VALUE, "kernel constants: more than %d constants", LHC_MAX_KEYS);
    if (strlen(key) >= LHC_MAX_KEY_LEN || strlen(value) >= LHC_MAX_VALUE_LEN)
        return lh_fail(LH_ERROR_INVALID_VALUE, "kernel constants: '%s' or its value is too long", key);
    if (find_key(c, key, strlen(key)) >= 0)
        return lh_fail(LH_ERROR_INVALID_VALUE, "kernel constants: '%s' is given twice", key);
    strcpy(c->key[c->count], key);
    strcpy(c->value[c->count], value);
    c->count++;
    return LH_OK;
}

lh_status lhc_constants_parse(const char *text, lhc_constants *out) {
    memset(out, 0, sizeof *out);
    const char *s = text ? text : "";
    for (;;) {
        while (*s == ' ' || *s == '\t' || *s == '\n' || *s == ',') s++;
        if (!*s) break;
        const char *key = s;
        while (is_key_char(*s, s == key)) s++;
        size_t key_len = (size_t)(s - key);
        if (key_len == 0 || *s != '=')
            return lh_fail(LH_ERROR_INVALID_VALUE,
                           "kernel constants must read KEY=VALUE with KEY in [A-Z_][A-Z0-9_]* "
                           "(got \"%s\")", text);
        const char *value = ++s;
        while (is_value_char(*s)) s++;
        size_t value_len = (size_t)(s - value);
        if (value_len == 0 || (*s && *s != ' ' && *s != '\t' && *s != '\n' && *s != ','))
            return lh_fail(LH_ERROR_INVALID_VALUE,
                           "kernel constant %.*s needs a value of [A-Za-z0-9_.+-] characters "
                           "(got \"%s\")", (int)key_len, key, text);
        if (key_len >= LHC_MAX_KEY_LEN || value_len >= LHC_MAX_VALUE_LEN)
            return lh_fail(LH_ERROR_INVALID_VALUE, "kernel constant %.*s: key or value too long",
                           (int)key_len, key);
        char k[LHC_MAX_KEY_LEN], v[LHC_MAX_VALUE_LEN];
        memcpy(k, key, key_len);
        k[key_len] = '\0';
        memcpy(v, value, value_len);
        v[value_len] = '\0';
        lh_status st = lhc_constants_add(out, k, v);
        if (st != LH_OK) return st;
    }
    /* Insertion sort by key: a handful of entries. */
    for (int i = 1; i < out->count; i++)
        for (int j = i; j > 0 && strcmp(out->key[j - 1], out->key[j]) > 0; j--) {
            char tk[LHC_MAX_KEY_LEN], tv[LHC_MAX_VALUE_LEN];
            memcpy(tk, out->key[j], sizeof tk);
            memcpy(tv, out->value[j], sizeof tv);
            memcpy(out->key[j], out->key[j - 1], sizeof tk);
            memcpy(out->value[j], out->value[j - 1], sizeof tv);
            memcpy(out->key[j - 1], tk, sizeof tk);
            memcpy(out->value[j - 1], tv, sizeof tv);
        }
    return LH_OK;
}

/* ---- {{expression}} evaluation: recursive descent over one placeholder ------------------- */

typedef struct expr_state {
    const char *p, *end;
    const lhc_constants *c;
    int *used;
    const char *error; /* first error, static text */
} expr_state;

static void skip_space(expr_state *e) {
    while (e->p < e->end && isspace((unsigned char)*e->p)) e->p++;
}

static int64_t parse_sum(expr_state *e);

static int64_t parse_primary(expr_state *e) {
    skip_space(e);
    if (e->p >= e->end) {
        e->error = "expression ends early";
        return 0;
    }
    if (*e->p == '(') {
        e->p++;
        int64_t v = parse_sum(e);
        skip_space(e);
        if (e->p < e->end && *e->p == ')') e->p++;
        else e->error = "missing ')'";
        return v;
    }
    if (*e->p == '-') {
        e->p++;
        int64_t v = parse_primary(e);
        if (v == INT64_MIN) e->error = "overflows 64 bits";
        return v == INT64_MIN ? 0 : -v;
    }
    if (isdigit((unsigned char)*e->p)) {
        int64_t v = 0;
        while (e->p < e->end && isdigit((unsigned char)*e->p))
            if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, *e->p++ - '0', &v))
                e->error = "overflows 64 bits";
        return v;
    }
    const char *name = e->p;
    while (e->p < e->end && (isalnum((unsigned char)*e->p) || *e->p == '_')) e->p++;
    size_t len = (size_t)(e->p - name);
    if (len == 0) {
        e->error = "unexpected character";
        return 0;
    }
    skip_space(e);
    if (e->p < e->end && *e->p == '(') { /* min(a,b), max(a,b), log2(a) */
        e->p++;
        int64_t a = parse_sum(e), b = 0;
        int two = (len == 3 && (memcmp(name, "min", 3) == 0 || memcmp(name, "max", 3) == 0));
        skip_space(e);
        if (two) {
            if (e->p < e->end && *e->p == ',') e->p++;
            else e->error = "min/max take two arguments";
            b = parse_sum(e);
            skip_space(e);
        }
        if (e->p < e->end && *e->p == ')') e->p++;
        else e->error = "missing ')' after function arguments";
        if (two) return memcmp(name, "min", 3) == 0 ? (a < b ? a : b) : (a > b ? a : b);
        if (len == 4 && memcmp(name, "log2", 4) == 0) {
            int64_t r = 0;
            while (a > 1) { a >>= 1; r++; }
            return r;
        }
        e->error = "unknown function (min, max, log2 exist)";
        return 0;
    }
    int idx = find_key(e->c, name, len);
    if (idx < 0) {
        e->error = "names a constant that was not given";
        return 0;
    }
    e->used[idx] = 1;
    char *endp;
    long long v = strtoll(e->c->value[idx], &endp, 10);
    if (*endp || endp == e->c->value[idx]) {
        e->error = "uses a non-integer constant in arithmetic";
        return 0;
    }
    return v;
}

static int64_t parse_product(expr_state *e) {
    int64_t v = parse_primary(e);
    for (;;) {
        skip_space(e);
        if (e->p >= e->end || (*e->p != '*' && *e->p != '/' && *e->p != '%')) return v;
        char op = *e->p++;
        int64_t r = parse_primary(e);
        if (op == '*') {
            if (__builtin_mul_overflow(v, r, &v)) e->error = "overflows 64 bits";
        } else if (r == 0 || (r == -1 && v == INT64_MIN)) {
            e->error = "divides by zero (or overflows)";
        } else {
            v = (op == '/') ? v / r : v % r;
        }
    }
}

static int64_t parse_sum(expr_state *e) {
    int64_t v = parse_product(e);
    for (;;) {
        skip_space(e);
        if (e->p >= e->end || (*e->p != '+' && *e->p != '-')) return v;
        char op = *e->p++;
        int64_t r = parse_product(e);
        if (op == '+' ? __builtin_add_overflow(v, r, &v) : __builtin_sub_overflow(v, r, &v))
            e->error = "overflows 64 bits";
    }
}

/* Growable output text. */
typedef struct text_buf {
    char *data;
    size_t len, cap;
} text_buf;

static int text_append(text_buf *t, const char *s, size_t n) {
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 4096;
        while (t->len + n + 1 > cap) cap *= 2;
        char *d = realloc(t->data, cap);
        if (!d) return -1;
        t->data = d;
        t->cap = cap;
    }
    memcpy(t->data + t->len, s, n);
    t->len += n;
    t->data[t->len] = '\0';
    return 0;
}

static int line_of(const char *source, const char *at) {
    int line = 1;
    for (const char *s = source; s < at; s++) line += (*s == '\n');
    return line;
}

/* ---- one kernel's text: placeholders and the shared pieces it includes ---------------------- */

#define LHC_MAX_INCLUDES 32

typedef struct expansion {
    const char *kernel;
    const lhc_constants *c;
    int used[LHC_MAX_KEYS];
    const lhc_template *pieces;
    int piece_count;
    const char *open[LHC_MAX_INCLUDES]; /* the pieces being expanded, outermost first */
    int depth;
    const char *done[LHC_MAX_INCLUDES]; /* every piece included so far */
    int done_count;
    text_buf out;
} expansion;

/* "kernel K" or "kernel K, shared piece P", then ", line N" where the error is. */
static void where(const expansion *x, const char *piece, const char *source, const char *at, char *buf,
                  size_t cap) {
    snprintf(buf, cap, "kernel %s%s%s, line %d", x->kernel, piece ? ", shared piece " : "",
             piece ? piece : "", line_of(source, at));
}

static lh_status expand_text(expansion *x, const char *piece, const char *source);

/* {{include NAME}}: the named shared piece, expanded with the same constants, in its place. A
 * piece holds definitions (helper functions), so a second include of one piece is an error, and
 * so is a cycle (reported as such: it is the likelier mistake). */
static lh_status expand_include(expansion *x, const char *piece, const char *source, const char *open,
                                const char *name, size_t len) {
    char at[160];
    where(x, piece, source, open, at, sizeof at);
    int ok = len > 0;
    for (size_t i = 0; i < len; i++)
        ok = ok && (islower((unsigned char)name[i]) || isdigit((unsigned char)name[i]) || name[i] == '_');
    if (!ok)
        return lh_fail(LH_ERROR_INVALID_VALUE,
                       "%s: {{include %.*s}} needs the name of a shared piece ([a-z0-9_]+)", at,
                       (int)len, name);
    const lhc_template *t = NULL;
    for (int i = 0; i < x->piece_count && !t; i++)
        if (strlen(x->pieces[i].name) == len && memcmp(x->pieces[i].name, name, len) == 0) t = &x->pieces[i];
    if (!t) {
        char known[512] = "";
        for (int i = 0; i < x->piece_count; i++)
            snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", i ? ", " : "",
                     x->pieces[i].name);
        return lh_fail(LH_ERROR_INVALID_VALUE,
                       "%s: {{include %.*s}} names no shared piece (kernels_mlir/shared/ holds: %s)", at,
                       (int)len, name, x->piece_count ? known : "none");
    }
    for (int i = 0; i < x->depth; i++)
        if (x->open[i] == t->name) {
            char chain[512] = "";
            for (int j = i; j < x->depth; j++)
                snprintf(chain + strlen(chain), sizeof chain - strlen(chain), "%s -> ", x->open[j]);
            return lh_fail(LH_ERROR_INVALID_VALUE, "%s: {{include %s}} is a cycle (%s%s)", at, t->name, chain,
                           t->name);
        }
    for (int i = 0; i < x->done_count; i++)
        if (x->done[i] == t->name)
            return lh_fail(LH_ERROR_INVALID_VALUE,
                           "%s: {{include %s}} includes that shared piece a second time (its "
                           "definitions would be repeated: include it once)", at, t->name);
    if (x->depth == LHC_MAX_INCLUDES || x->done_count == LHC_MAX_INCLUDES)
        return lh_fail(LH_ERROR_INVALID_VALUE, "%s: more than %d shared pieces included", at, LHC_MAX_INCLUDES);
    x->done[x->done_count++] = t->name;
    x->open[x->depth++] = t->name;
    lh_status st = expand_text(x, t->name, t->source);
    x->depth--;
    return st;
}

/* One placeholder's text: an include, a lone constant name (its value is pasted), or integer
 * arithmetic (evaluated). */
static lh_status expand_one(expansion *x, const char *piece, const char *source, const char *open,
                            const char *start, const char *end) {
    const char *a = start, *b = end;
    while (a < b && isspace((unsigned char)*a)) a++;
    while (b > a && isspace((unsigned char)b[-1])) b--;
    if (b - a > 7 && memcmp(a, "include", 7) == 0 && isspace((unsigned char)a[7])) {
        const char *name = a + 7;
        while (name < b && isspace((unsigned char)*name)) name++;
        return expand_include(x, piece, source, open, name, (size_t)(b - name));
    }
    int idx = find_key(x->c, a, (size_t)(b - a));
    if (idx >= 0) {
        x->used[idx] = 1;
        return text_append(&x->out, x->c->value[idx], strlen(x->c->value[idx])) ? LH_ERROR_OUT_OF_HOST_MEMORY
                                                                                 : LH_OK;
    }
    expr_state e = {start, end, x->c, x->used, NULL};
    int64_t v = parse_sum(&e);
    skip_space(&e);
    if (!e.error && e.p != e.end) e.error = "has trailing text";
    if (e.error) {
        char at[160];
        where(x, piece, source, open, at, sizeof at);
        return lh_fail(LH_ERROR_INVALID_VALUE, "%s: placeholder {{%.*s}} %s", at, (int)(end - start), start,
                       e.error);
    }
    char num[32];
    int n = snprintf(num, sizeof num, "%lld", (long long)v);
    return text_append(&x->out, num, (size_t)n) ? LH_ERROR_OUT_OF_HOST_MEMORY : LH_OK;
}

/* Appends `source` (the kernel's text, or the shared piece `piece`) with its placeholders
 * replaced. */
static lh_status expand_text(expansion *x, const char *piece, const char *source) {
    const char *s = source;
    for (;;) {
        const char *open = strstr(s, "{{");
        if (!open) return text_append(&x->out, s, strlen(s)) ? LH_ERROR_OUT_OF_HOST_MEMORY : LH_OK;
        const char *close = strstr(open + 2, "}}");
        if (!close) {
            char at[160];
            where(x, piece, source, open, at, sizeof at);
            return lh_fail(LH_ERROR_INVALID_VALUE, "%s: '{{' without '}}'", at);
        }
        if (text_append(&x->out, s, (size_t)(open - s))) return LH_ERROR_OUT_OF_HOST_MEMORY;
        lh_status st = expand_one(x, piece, source, open, open + 2, close);
        if (st != LH_OK) return st;
        s = close + 2;
    }
}

lh_status lhc_template_expand(const char *name, const char *source, const lhc_template *pieces,
                              int piece_count, const lhc_constants *c, int checked_count, char **out) {
    expansion *x = calloc(1, sizeof *x);
    if (!x) return lh_fail(LH_ERROR_OUT_OF_HOST_MEMORY, "kernel %s: out of host memory", name);
    x->kernel = name;
    x->c = c;
    x->pieces = pieces;
    x->piece_count = pieces ? piece_count : 0;
    lh_status st = expand_text(x, NULL, source);
    for (int i = 0; st == LH_OK && i < checked_count && i < c->count; i++)
        if (!x->used[i])
            st = lh_fail(LH_ERROR_INVALID_VALUE, "kernel %s has no constant named %s (given %s=%s)",
                         name, c->key[i], c->key[i], c->value[i]);
    if (st == LH_ERROR_OUT_OF_HOST_MEMORY)
        lh_fail(st, "kernel %s: out of host memory while specialising the template", name);
    if (st == LH_OK) *out = x->out.data;
    else free(x->out.data);
    free(x);
    return st;
}
