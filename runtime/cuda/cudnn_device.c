/* cudnn_device.c - a GPU described in text for cuDNN plans built without it (see the header). */
#include "cudnn_device.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAGIC "LHDEV1\n"

char *lh_device_text_encode(const char *name, int sm, size_t cudnn_version,
                            const char *properties) {
    if (!name || !properties || !properties[0] || strchr(name, '\n') ||
        strlen(name) >= LH_DEVICE_NAME_CAP)
        return NULL;
    size_t cap = strlen(MAGIC) + strlen(name) + strlen(properties) + 96;
    char *text = malloc(cap);
    if (!text) return NULL;
    snprintf(text, cap, MAGIC "name %s\nsm %d\ncudnn %zu\n%s", name, sm, cudnn_version,
             properties);
    return text;
}

/* One "<key> <value>\n" line at *at: the value's start and length; false if the line is not
 * that key's. */
static bool field(const char **at, const char *key, const char **value, size_t *len) {
    size_t k = strlen(key);
    if (strncmp(*at, key, k) != 0 || (*at)[k] != ' ') return false;
    const char *v = *at + k + 1, *end = strchr(v, '\n');
    if (!end) return false;
    *value = v;
    *len = (size_t)(end - v);
    *at = end + 1;
    return true;
}

static bool whole_number(const char *v, size_t len, long long lo, long long hi, long long *out) {
    if (len == 0 || len > 18) return false;
    long long x = 0;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9') return false;
        x = 10 * x + (v[i] - '0');
    }
    if (x < lo || x > hi) return false;
    *out = x;
    return true;
}

lh_status lh_device_text_parse(const char *text, lh_device_text *out) {
    memset(out, 0, sizeof *out);
    if (!text || strncmp(text, MAGIC, strlen(MAGIC)) != 0)
        return lh_fail(LH_ERROR_INVALID_VALUE,
                       "not a device description (it starts with \"LHDEV1\": write one with "
                       "lh_context_save_device, or lighthouse-compile --save-device, on the GPU)");
    const char *at = text + strlen(MAGIC), *v;
    size_t len;
    long long sm, version;
    if (!field(&at, "name", &v, &len) || len == 0 || len >= LH_DEVICE_NAME_CAP)
        return lh_fail(LH_ERROR_INVALID_VALUE,
                       "the device description has no GPU name on its second line");
    memcpy(out->name, v, len);
    out->name[len] = '\0';
    if (!field(&at, "sm", &v, &len) || !whole_number(v, len, 10, 1000, &sm))
        return lh_fail(LH_ERROR_INVALID_VALUE,
                       "the device description has no compute capability (\"sm NN\") on its "
                       "third line");
    if (!field(&at, "cudnn", &v, &len) || !whole_number(v, len, 1, 100000000, &version))
        return lh_fail(LH_ERROR_INVALID_VALUE,
                       "the device description has no cuDNN version (\"cudnn NNNNN\") on its "
                       "fourth line");
    if (*at != '{')
        return lh_fail(LH_ERROR_INVALID_VALUE,
                       "the device description has no cuDNN device properties (a JSON object) "
                       "after its fourth line");
    out->sm = (int)sm;
    out->cudnn_version = (size_t)version;
    out->properties = at;
    return LH_OK;
}

lh_status lh_cudnn_device_properties(const lh_cudnn_api *dnn, int device, char **out_json) {
    *out_json = NULL;
    cudnnBackendDescriptor_t d = NULL;
    lh_status st = lh_cudnn_check(
        dnn->BackendCreateDescriptor(CUDNN_BACKEND_DEVICEPROP_DESCRIPTOR, &d),
        "creating a device-properties descriptor (cuDNN 9.11 or later)");
    if (st != LH_OK) return st;
    int32_t ordinal = device;
    int64_t n = 0, got = 0;
    st = lh_cudnn_check(dnn->BackendSetAttribute(d, CUDNN_ATTR_DEVICEPROP_DEVICE_ID,
                                                 CUDNN_TYPE_INT32, 1, &ordinal),
                        "setting the device of the device properties");
    if (st == LH_OK)
        st = lh_cudnn_check(dnn->BackendFinalize(d), "reading the GPU's device properties");
    if (st == LH_OK)
        st = lh_cudnn_check(dnn->BackendGetAttribute(d, CUDNN_ATTR_DEVICEPROP_JSON_REPRESENTATION,
                                                     CUDNN_TYPE_CHAR, 0, &n, NULL),
                            "sizing the device properties' text");
    char *json = NULL;
    if (st == LH_OK && n <= 0)
        st = lh_fail(LH_ERROR_CUDNN, "cuDNN gave no text for the device properties");
    if (st == LH_OK && !(json = malloc((size_t)n + 1)))
        st = lh_fail(LH_ERROR_OUT_OF_HOST_MEMORY, "allocating the device properties' text failed");
    if (st == LH_OK)
        st = lh_cudnn_check(dnn->BackendGetAttribute(d, CUDNN_ATTR_DEVICEPROP_JSON_REPRESENTATION,
                                                     CUDNN_TYPE_CHAR, n, &got, json),
                            "reading the device properties' text");
    dnn->BackendDestroyDescriptor(d);
    if (st != LH_OK) {
        free(json);
        return st;
    }
    if (got < 0 || got > n) got = 0;
    json[got] = '\0';
    *out_json = json;
    return LH_OK;
}

lh_status lh_cudnn_device_open(const lh_cudnn_api *dnn, const lh_device_text *text,
                               cudnnBackendDescriptor_t *out) {
    *out = NULL;
    if (text->cudnn_version != dnn->version)
        return lh_fail(LH_ERROR_INVALID_VALUE,
                       "the device description of %s was written with cuDNN %zu, and this "
                       "process has cuDNN %zu: plans built here would be restored only by this "
                       "one; describe the GPU again with the cuDNN the training job runs",
                       text->name, text->cudnn_version, dnn->version);
    cudnnBackendDescriptor_t d = NULL;
    lh_status st = lh_cudnn_check(
        dnn->BackendCreateDescriptor(CUDNN_BACKEND_DEVICEPROP_DESCRIPTOR, &d),
        "creating a device-properties descriptor (cuDNN 9.11 or later)");
    if (st != LH_OK) return st;
    st = lh_cudnn_check(dnn->BackendSetAttribute(d, CUDNN_ATTR_DEVICEPROP_JSON_REPRESENTATION,
                                                 CUDNN_TYPE_CHAR,
                                                 (int64_t)strlen(text->properties),
                                                 text->properties),
                        "reading the device description's properties");
    if (st == LH_OK)
        st = lh_cudnn_check(dnn->BackendFinalize(d),
                            "finalizing the device description's properties");
    if (st != LH_OK) {
        dnn->BackendDestroyDescriptor(d);
        return st;
    }
    *out = d;
    return LH_OK;
}
