/*
 * compiler_internal.h - what the files of compiler/ share with each other (not the runtime).
 */
#ifndef LH_COMPILER_INTERNAL_H
#define LH_COMPILER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "compiler.h"

/* ---- specialisation constants (template.c) ------------------------------------------------ */

#define LHC_MAX_KEYS 32
#define LHC_MAX_KEY_LEN 32
#define LHC_MAX_VALUE_LEN 96

typedef struct lhc_constants {
    int count;
    char key[LHC_MAX_KEYS][LHC_MAX_KEY_LEN];
    char value[LHC_MAX_KEYS][LHC_MAX_VALUE_LEN];
} lhc_constants;

/* Parses "KEY=VALUE ..." (keys [A-Z_][A-Z0-9_]*, values [A-Za-z0-9_.+-]+, no duplicates) and
 * sorts by key, so the checks and their messages do not depend on the order given. */
lh_status lhc_constants_parse(const char *text, lhc_constants *out);
/* Appends KEY=VALUE (the compiler's own constants, e.g. TARGET; value may hold any text). */
lh_status lhc_constants_add(lhc_constants *c, const char *key, const char *value);

/* The text of a kernel template or of a shared piece (kernels_mlir/shared/NAME.mlir). */
typedef struct lhc_template {
    const char *name;
    const char *source;
} lhc_template;

/* Replaces every {{...}} of `source` (see docs/compiler.md): {{include NAME}} by the shared piece
 * NAME of `pieces` (expanded the same way; an unknown piece, a cycle or a second include of one
 * piece is an error), anything else as an expression (integers, constants, + - * / %,
 * parentheses, min(a,b), max(a,b), log2(a); a lone non-integer constant is pasted as text).
 * Every constant whose index is below `checked_count` must be used at least once, in the
 * kernel or its pieces. Returns a malloc'd NUL-terminated text in *out. */
lh_status lhc_template_expand(const char *name, const char *source, const lhc_template *pieces,
                              int piece_count, const lhc_constants *c, int checked_count, char **out);

/* ---- hashing (hash.c) --------------------------------------------------------------------- */

typedef struct lhc_hash128 {
    uint64_t hi, lo;
} lhc_hash128;

/* FNV-1a, 128-bit: the cache key (not a security boundary: disk_cache.c trusts only entries
 * that no other user can have written). */
void lhc_hash128_init(lhc_hash128 *h);
void lhc_hash128_update(lhc_hash128 *h, const void *data, size_t size);
/* Hashes the string and its terminating NUL, so ("ab","c") and ("a","bc") differ. */
void lhc_hash128_string(lhc_hash128 *h, const char *s);
void lhc_hash128_hex(const lhc_hash128 *h, char out[33]);
/* FNV-1a, 64-bit: the checksum of a disk entry's payload. */
uint64_t lhc_hash64(const void *data, size_t size);

/* ---- the disk cache (disk_cache.c) -------------------------------------------------------- */

/* Fills `out` with the default directory ("" when neither variable nor HOME is set). */
void lhc_default_cache_dir(char *out, size_t cap);
/* Reads the entry for `key_hex`. `text`: the payload is text (PTX, a cuDNN plan's JSON), so a
 * NUL byte in it is damage; else bytes (machine code). Returns 1 and a malloc'd payload followed
 * by one NUL on a valid entry, 0 when absent, -1 when present but corrupt or truncated (the
 * caller recompiles), -2 when the directory or the entry may not be trusted (another user's,
 * writable by others, not a regular file): `why` then holds a sentence. */
int lhc_disk_read(const char *dir, const char *kernel, const char *key_hex, int text,
                  char **payload, size_t *size, char *why, size_t why_cap);
/* Writes the entry atomically (temporary file + rename). Returns 0, -1 on any failure, or -2
 * (with `why`) when the directory may not be trusted: nothing is written there. */
int lhc_disk_write(const char *dir, const char *kernel, const char *key_hex, const char *payload,
                   size_t size, char *why, size_t why_cap);

/* ---- MLIR (mlir_compile.c, or mlir_stub.c without the compiler) --------------------------- */

/* The PTX ISA features every kernel is built with: part of the cache key. */
#define LHC_PTX_FEATURES "+ptx86"

/* Parses `mlir_text`, lowers it to NVVM and serialises it to PTX for `chip`. Returns a malloc'd
 * NUL-terminated PTX in *ptx. On failure the message carries MLIR's diagnostics. */
lh_status lhc_mlir_to_ptx(const char *kernel, const char *mlir_text, const char *chip, char **ptx);
/* "LLVM 22.1.8" or "none": part of the cache key. */
const char *lhc_llvm_version(void);
/* The pass pipeline text: part of the cache key. */
const char *lhc_pipeline_text(void);

/* ---- the kernel cache (cache.c) ---------------------------------------------------------- */

/* What lhc_compile looks a kernel up by: its cache key (32 hex digits) and, where `mlir` is not
 * NULL, the specialised text MLIR would compile (malloc'd). The same errors as lhc_compile for
 * an unknown kernel, a malformed chip or bad constants. */
lh_status lhc_kernel_key(const char *kernel, const char *constants, const char *chip, char key[33],
                         char **mlir);

/* ---- the kernel templates (kernel_registry.c + generated kernels_embedded.c) -------------- */

extern const lhc_template lhc_templates[];
extern const int lhc_template_total;
/* The shared pieces that templates include: kernels_mlir/shared/, one file each. */
extern const lhc_template lhc_template_pieces[];
extern const int lhc_template_piece_total;

#endif /* LH_COMPILER_INTERNAL_H */
