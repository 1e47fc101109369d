/* cuda_cubin_store.c - kernels loaded from the machine code kept in the kernel cache (see the
 * header for why). */
#include "cuda_cubin_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RECORD_NAME "cubin"
#define IDENTITY_CAP 256

bool cuda_cubin_store_wanted(void) {
    const char *env = getenv("LIGHTHOUSE_KERNEL_CUBIN_STORE");
    return env && strcmp(env, "1") == 0;
}

bool cuda_cubin_identity(const lhc_kernel *k, const char *chip, int driver_version, char *out,
                         size_t cap) {
    if (!k->key || !chip) return false;
    int n = snprintf(out, cap, "liblighthouse kernel cubin v1\nchip %s\nkernel %s\ndriver %d\n",
                     chip, k->key, driver_version);
    return n > 0 && (size_t)n < cap;
}

/* A cubin is an ELF image; anything else is not handed to the driver as one. */
static bool load_image(const lh_cu_api *cu, const void *image, size_t size, lh_cu_module *out) {
    static const unsigned char elf_magic[4] = {0x7f, 'E', 'L', 'F'};
    if (!image || size < sizeof elf_magic || memcmp(image, elf_magic, sizeof elf_magic) != 0)
        return false;
    CUmodule module = NULL;
    if (cu->ModuleLoadDataEx(&module, image, 0, NULL, NULL) != CUDA_SUCCESS) return false;
    out->module = module;
    return true;
}

/* The driver's linker compiles the PTX for the current context's GPU; the cubin it hands back
 * lives as long as the linker's state, so a copy is returned (malloc'd). */
static bool link_ptx(const lh_cu_api *cu, const lhc_kernel *k, char **cubin, size_t *size) {
    if (!cu->LinkCreate || !cu->LinkAddData || !cu->LinkComplete || !cu->LinkDestroy)
        return false;
    CUlinkState state = NULL;
    if (cu->LinkCreate(0, NULL, NULL, &state) != CUDA_SUCCESS) return false;
    void *image = NULL;
    size_t n = 0;
    bool ok = cu->LinkAddData(state, CU_JIT_INPUT_PTX, (void *)k->ptx, k->ptx_size + 1,
                              k->entries && k->num_entries > 0 ? k->entries[0] : "kernel", 0,
                              NULL, NULL) == CUDA_SUCCESS &&
              cu->LinkComplete(state, &image, &n) == CUDA_SUCCESS && image && n > 0;
    *cubin = ok ? malloc(n) : NULL;
    if (*cubin) {
        memcpy(*cubin, image, n);
        *size = n;
    }
    cu->LinkDestroy(state);
    return *cubin != NULL;
}

lh_status cuda_cubin_load(const lh_cu_api *cu, lhc_cache *store, const lhc_kernel *k,
                          const char *chip, lh_cu_module *out, cuda_cubin_outcome *outcome) {
    cuda_cubin_outcome ignored;
    if (!outcome) outcome = &ignored;
    *outcome = CUDA_CUBIN_UNUSED;
    int driver = 0;
    char id[IDENTITY_CAP];
    if (!store || !lhc_cache_records_enabled(store) ||
        cu->DriverGetVersion(&driver) != CUDA_SUCCESS ||
        !cuda_cubin_identity(k, chip, driver, id, sizeof id))
        return lh_cu_module_load(cu, k->ptx, out);

    char *cubin = NULL;
    size_t size = 0;
    if (lhc_cache_record_read_bytes(store, RECORD_NAME, id, &cubin, &size) == 1) {
        bool loaded = load_image(cu, cubin, size, out);
        free(cubin);
        if (loaded) {
            *outcome = CUDA_CUBIN_RESTORED;
            return LH_OK;
        }
        /* Refused by this driver: made again below, and the record replaced. */
    }
    /* Linking bypasses the driver's own cache of compiled PTX: worth it only for a record that
     * can be kept. A read-only cache loads the PTX, which that cache may hold. */
    if (lhc_cache_records_writable(store) && link_ptx(cu, k, &cubin, &size)) {
        bool loaded = load_image(cu, cubin, size, out);
        bool written = loaded && lhc_cache_record_write(store, RECORD_NAME, id, cubin, size) == 0;
        free(cubin);
        if (loaded) {
            *outcome = written ? CUDA_CUBIN_STORED : CUDA_CUBIN_UNSTORED;
            return LH_OK;
        }
    }
    return lh_cu_module_load(cu, k->ptx, out);
}
