/* cudnn_api.c - dlopen of cuDNN 9 and the error text of its calls. */
#include "cudnn_api.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static lh_cudnn_api api;
static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static lh_status load_status = LH_ERROR_BACKEND_UNAVAILABLE;
static char load_message[1536];

#define SYM(field, exported) {exported, (void **)&api.field}

static void load(void) {
    /* libcudnn.so.9 is the front library that forwards to libcudnn_graph/ops/engines_*; where
     * only the graph library is installed, it alone carries every symbol used here. */
    static const char *const names[] = {"libcudnn.so.9", "libcudnn_graph.so.9"};
    void *lib = NULL;
    char errors[1024] = "";
    for (size_t i = 0; i < 2 && !lib; i++) {
        lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        if (!lib) {
            const char *why = dlerror();
            size_t used = strlen(errors);
            snprintf(errors + used, sizeof errors - used, "%s%s", used ? "; " : "",
                     why ? why : names[i]);
        }
    }
    if (!lib) {
        const char *path = getenv("LD_LIBRARY_PATH");
        snprintf(load_message, sizeof load_message,
                 "cuDNN 9 was not found: looked for libcudnn.so.9 and libcudnn_graph.so.9 on "
                 "LD_LIBRARY_PATH (%s) and the system library path (%s); install cuDNN 9 (for "
                 "example the nvidia-cudnn-cu12/cu13 wheel) and add its lib folder to "
                 "LD_LIBRARY_PATH",
                 path ? path : "unset", errors);
        return;
    }
    struct {
        const char *name;
        void **slot;
    } table[] = {
        SYM(GetVersion, "cudnnGetVersion"),
        SYM(GetErrorString, "cudnnGetErrorString"),
        SYM(GetLastErrorString, "cudnnGetLastErrorString"),
        SYM(Create, "cudnnCreate"),
        SYM(Destroy, "cudnnDestroy"),
        SYM(SetStream, "cudnnSetStream"),
        SYM(BackendCreateDescriptor, "cudnnBackendCreateDescriptor"),
        SYM(BackendDestroyDescriptor, "cudnnBackendDestroyDescriptor"),
        SYM(BackendFinalize, "cudnnBackendFinalize"),
        SYM(BackendSetAttribute, "cudnnBackendSetAttribute"),
        SYM(BackendGetAttribute, "cudnnBackendGetAttribute"),
        SYM(BackendExecute, "cudnnBackendExecute"),
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        *table[i].slot = dlsym(lib, table[i].name);
        if (!*table[i].slot) {
            snprintf(load_message, sizeof load_message,
                     "the loaded cuDNN library has no symbol %s: cuDNN 9.0 or newer is needed",
                     table[i].name);
            dlclose(lib);
            return;
        }
    }
    api.version = api.GetVersion();
    size_t (*cudart)(void) = (size_t (*)(void))dlsym(lib, "cudnnGetCudartVersion");
    api.cudart_version = cudart ? cudart() : 0;
    if (api.version < LH_CUDNN_MIN_VERSION) {
        snprintf(load_message, sizeof load_message,
                 "cuDNN %zu.%zu.%zu was found, but 9.0.0 or newer is needed for the SDPA graphs",
                 api.version / 10000, (api.version / 100) % 100, api.version % 100);
        dlclose(lib);
        return;
    }
    load_status = LH_OK;
}

bool lh_cudnn_try_load(const lh_cudnn_api **out_api) {
    pthread_once(&load_once, load);
    *out_api = load_status == LH_OK ? &api : NULL;
    return load_status == LH_OK;
}

lh_status lh_cudnn_load(const lh_cudnn_api **out_api) {
    if (!lh_cudnn_try_load(out_api)) return lh_fail(load_status, "%s", load_message);
    return LH_OK;
}

lh_status lh_cudnn_fail(cudnnStatus_t status, const char *what) {
    char detail[1024] = "";
    if (api.GetLastErrorString) api.GetLastErrorString(detail, sizeof detail);
    const char *name = api.GetErrorString ? api.GetErrorString(status) : "cuDNN error";
    lh_status st = status == CUDNN_STATUS_ALLOC_FAILED ? LH_ERROR_OUT_OF_DEVICE_MEMORY
                                                       : LH_ERROR_CUDNN;
    return lh_fail(st, "%s failed: %s (%d)%s%s", what, name, (int)status, detail[0] ? ": " : "",
                   detail);
}
