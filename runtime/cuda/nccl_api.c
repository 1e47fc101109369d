/* nccl_api.c - dlopen of libnccl.so.2 and its version check (see nccl_api.h). */
#include "nccl_api.h"

#include <dlfcn.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>

static lh_nccl_api g_api;
static lh_status g_status = LH_OK;
static char g_message[512];
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

/* NCCL 2.12 is the oldest with everything a ring uses in its current form (ncclCommAbort,
 * grouped send/recv to self). */
#define LH_NCCL_MIN_VERSION 21200

static void load_once(void) {
    /* NVLink SHARP (multicast objects) stays off unless the user asks for it: rings only send
     * point to point, and multicast set-up has hung shared machines. An explicit setting wins. */
    setenv("NCCL_NVLS_ENABLE", "0", 0);
    const char *name = getenv("LIGHTHOUSE_NCCL_LIBRARY");
    if (!name || !*name) name = "libnccl.so.2";
    void *lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        const char *why = dlerror();
        g_status = lh_fail(LH_ERROR_BACKEND_UNAVAILABLE,
                           "NCCL rings need NCCL 2.12 or newer, but %s could not be loaded (%s); "
                           "install NCCL or put it on LD_LIBRARY_PATH",
                           name, why ? why : "no reason given");
        snprintf(g_message, sizeof g_message, "%s", lh_error_message());
        return;
    }
    struct { const char *name; void **slot; } table[] = {
        {"ncclGetVersion", (void **)&g_api.GetVersion},
        {"ncclGetUniqueId", (void **)&g_api.GetUniqueId},
        {"ncclCommInitRank", (void **)&g_api.CommInitRank},
        {"ncclCommDestroy", (void **)&g_api.CommDestroy},
        {"ncclCommAbort", (void **)&g_api.CommAbort},
        {"ncclCommCount", (void **)&g_api.CommCount},
        {"ncclCommUserRank", (void **)&g_api.CommUserRank},
        {"ncclSend", (void **)&g_api.Send},
        {"ncclRecv", (void **)&g_api.Recv},
        {"ncclGroupStart", (void **)&g_api.GroupStart},
        {"ncclGroupEnd", (void **)&g_api.GroupEnd},
        {"ncclGetErrorString", (void **)&g_api.GetErrorString},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        *table[i].slot = dlsym(lib, table[i].name);
        if (!*table[i].slot) {
            g_status = lh_fail(LH_ERROR_BACKEND_UNAVAILABLE,
                               "%s has no symbol %s: NCCL rings need NCCL 2.12 or newer", name,
                               table[i].name);
            snprintf(g_message, sizeof g_message, "%s", lh_error_message());
            return;
        }
    }
    int v = 0;
    if (g_api.GetVersion(&v) != 0 || v < LH_NCCL_MIN_VERSION) {
        g_status = lh_fail(LH_ERROR_BACKEND_UNAVAILABLE,
                           "NCCL rings need NCCL 2.12 or newer; %s reports version code %d", name, v);
        snprintf(g_message, sizeof g_message, "%s", lh_error_message());
        return;
    }
    g_api.version = v;
}

lh_status lh_nccl_load(const lh_nccl_api **out) {
    pthread_once(&g_once, load_once);
    if (g_status != LH_OK) return lh_fail(g_status, "%s", g_message);
    *out = &g_api;
    return LH_OK;
}

lh_status lh_nccl_check(const lh_nccl_api *nccl, lh_nccl_result result, const char *what) {
    if (result == 0) return LH_OK;
    const char *why = nccl->GetErrorString ? nccl->GetErrorString(result) : NULL;
    return lh_fail(LH_ERROR_COMMUNICATION, "%s failed: NCCL error %d (%s)", what, (int)result,
                   why ? why : "no description");
}
