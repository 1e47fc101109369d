/* test_plan_record.c - the disk store of cuDNN execution plans without cuDNN
 * (runtime/cuda/cudnn_plan_record.c): every field of the identity keys a record; a record reads
 * back as written; records that are damaged, truncated, of another format version or of another
 * identity (another cuDNN, GPU, graph version, role or shape) are never used; nothing is read or
 * written while the kernel cache's disk part is disabled. And the store's cuDNN calls
 * (runtime/cuda/cudnn_plan_store.c) against a stand-in for cuDNN: a plan is saved and restored
 * with what its builder read, and every refusal (no JSON, a refused text, another workspace,
 * LIGHTHOUSE_CUDNN_PLAN_STORE=0) ends in building, never in an error. And the text that describes
 * a GPU for plans built without it (runtime/cuda/cudnn_device.c). */
#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cudnn_device.h"
#include "cudnn_plan_record.h"
#include "cudnn_plan_store.h"
#include "test_plan_record.h"

static const char *JSON = "{\"engine\":{\"id\":7},\"knobs\":[1,2,3]}\n{\"more\":\"text\"}";

static lh_plan_key shape_of(int64_t s) {
    lh_plan_key k = {{0}};
    k.w[0] = 2, k.w[1] = 8, k.w[3] = s, k.w[LH_PLAN_KEY_WORDS - 1] = -1;
    return k;
}

static void identity_of(const lh_plan_record_id *id, char *out) {
    ck_assert(lh_plan_record_identity(id, out, LH_PLAN_RECORD_IDENTITY_CAP));
    ck_assert_ptr_null(strchr(out, '\n'));
}

START_TEST(identity_names_every_field) {
    lh_plan_key shape = shape_of(4096), other_shape = shape_of(8192);
    lh_plan_record_id base = {.cudnn_version = 91900, .sm = 90, .device = "NVIDIA H100 80GB HBM3",
                              .graph_version = 1, .role = "forward", .shape = &shape};
    char a[LH_PLAN_RECORD_IDENTITY_CAP], b[LH_PLAN_RECORD_IDENTITY_CAP];
    identity_of(&base, a);
    identity_of(&base, b);
    ck_assert_str_eq(a, b);
    lh_plan_record_id v[6];
    for (int i = 0; i < 6; i++) v[i] = base;
    v[0].cudnn_version = 91901;
    v[1].sm = 100;
    v[2].device = "NVIDIA H200";
    v[3].graph_version = 2;
    v[4].role = "backward";
    v[5].shape = &other_shape;
    for (int i = 0; i < 6; i++) {
        identity_of(&v[i], b);
        ck_assert_msg(strcmp(a, b) != 0, "field %d does not change the identity", i);
    }
    /* the library's version is in it too */
    char version[32];
    snprintf(version, sizeof version, "lighthouse %d.%d.%d ", LH_VERSION_MAJOR, LH_VERSION_MINOR,
             LH_VERSION_PATCH);
    ck_assert_ptr_eq(strstr(a, version), a);
    /* a name with a newline cannot break the record's lines */
    base.device = "evil\nname";
    identity_of(&base, b);
}
END_TEST

START_TEST(record_round_trip_and_rejects) {
    lh_plan_key shape = shape_of(4096);
    lh_plan_record_id id = {.cudnn_version = 91900, .sm = 90, .device = "GPU", .graph_version = 1,
                            .role = "backward", .shape = &shape};
    char ident[LH_PLAN_RECORD_IDENTITY_CAP], foreign[LH_PLAN_RECORD_IDENTITY_CAP];
    identity_of(&id, ident);
    id.cudnn_version = 90800;
    identity_of(&id, foreign);
    lh_plan_record_meta meta = {.engine_id = 12, .workspace_bytes = 1 << 20,
                                .deterministic = true, .bwd_kind = 1}, got;
    size_t size = 0;
    char *text = lh_plan_record_encode(ident, &meta, JSON, &size);
    ck_assert_ptr_nonnull(text);
    ck_assert_uint_eq(size, strlen(text));
    const char *json = NULL;
    ck_assert(lh_plan_record_decode(text, ident, &got, &json));
    ck_assert_str_eq(json, JSON);
    ck_assert_int_eq(got.engine_id, 12);
    ck_assert_int_eq(got.workspace_bytes, 1 << 20);
    ck_assert(got.deterministic);
    ck_assert_int_eq(got.bwd_kind, 1);
    /* another identity: another cuDNN wrote it */
    ck_assert(!lh_plan_record_decode(text, foreign, &got, &json));
    /* another format version */
    text[4] = '2';
    ck_assert(!lh_plan_record_decode(text, ident, &got, &json));
    text[4] = '1';
    /* truncated: before the plan, inside the fields line, inside the identity */
    char *cut = strdup(text);
    size_t plan_at = (size_t)(strstr(text, JSON) - text);
    cut[plan_at] = '\0';
    ck_assert(!lh_plan_record_decode(cut, ident, &got, &json));
    cut[plan_at - 5] = '\0';
    ck_assert(!lh_plan_record_decode(cut, ident, &got, &json));
    cut[20] = '\0';
    ck_assert(!lh_plan_record_decode(cut, ident, &got, &json));
    free(cut);
    free(text);
    /* fields out of range or followed by junk */
    const char *bad[] = {"engine 1 workspace -5 deterministic 1 bwd 0",
                         "engine 1 workspace 5 deterministic 2 bwd 0",
                         "engine 1 workspace 5 deterministic 1 bwd 7",
                         "engine 1 workspace 5 deterministic 1 bwd 0 extra",
                         "engine x workspace 5 deterministic 1 bwd 0"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char rec[2048];
        snprintf(rec, sizeof rec, "LHCP1\n%s\n%s\n%s", ident, bad[i], JSON);
        ck_assert_msg(!lh_plan_record_decode(rec, ident, &got, &json), "accepted: %s", bad[i]);
    }
    /* nothing to store */
    ck_assert_ptr_null(lh_plan_record_encode(ident, &meta, "", &size));
}
END_TEST

/* ---- through the kernel cache's directory ------------------------------------------------- */

static char dir[256];

static void make_dir(void) {
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/lh-plan-record-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void remove_dir(void) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char path[600];
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') {
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
    closedir(d);
    rmdir(dir);
}

/* The path of the one record file in the directory. */
static void record_path(char *out, size_t cap) {
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d)))
        if (strncmp(e->d_name, "cudnn-plan-", 11) == 0) {
            snprintf(out, cap, "%s/%s", dir, e->d_name);
            n++;
        }
    closedir(d);
    ck_assert_int_eq(n, 1);
}

START_TEST(store_round_trip_and_damage) {
    make_dir();
    lhc_cache *cache = NULL;
    ck_assert_int_eq(lhc_cache_create(&cache), LH_OK);
    ck_assert_int_eq(lhc_cache_set_dir(cache, dir), LH_OK);
    lh_plan_key shape = shape_of(2048);
    lh_plan_record_id id = {.cudnn_version = 91900, .sm = 90, .device = "GPU", .graph_version = 1,
                            .role = "forward", .shape = &shape};
    char ident[LH_PLAN_RECORD_IDENTITY_CAP], other[LH_PLAN_RECORD_IDENTITY_CAP];
    identity_of(&id, ident);
    id.role = "backward";
    identity_of(&id, other);
    lh_plan_record_meta meta = {.engine_id = 3, .workspace_bytes = 4096}, got;
    char *json = NULL;
    ck_assert(!lh_plan_record_load(cache, ident, &got, &json)); /* empty store */
    ck_assert(lh_plan_record_save(cache, ident, &meta, JSON));
    ck_assert(lh_plan_record_load(cache, ident, &got, &json));
    ck_assert_str_eq(json, JSON);
    ck_assert_int_eq(got.engine_id, 3);
    ck_assert_int_eq(got.workspace_bytes, 4096);
    ck_assert(!got.deterministic);
    free(json);
    json = NULL;
    ck_assert(!lh_plan_record_load(cache, other, &got, &json)); /* another role: no record */

    /* a damaged byte in the plan: the checksum refuses it */
    char path[600];
    record_path(path, sizeof path);
    FILE *f = fopen(path, "r+b");
    ck_assert_ptr_nonnull(f);
    fseek(f, -3, SEEK_END);
    fputc('#', f);
    fclose(f);
    ck_assert(!lh_plan_record_load(cache, ident, &got, &json));
    /* truncated */
    ck_assert(lh_plan_record_save(cache, ident, &meta, JSON));
    ck_assert_int_eq(truncate(path, 40), 0);
    ck_assert(!lh_plan_record_load(cache, ident, &got, &json));
    /* a whole, checksummed file of another identity at this identity's name (another version
     * of the record's writer) */
    size_t size = 0;
    char *foreign = lh_plan_record_encode(other, &meta, JSON, &size);
    ck_assert_int_eq(lhc_cache_record_write(cache, "cudnn-plan", ident, foreign, size), 0);
    free(foreign);
    ck_assert(!lh_plan_record_load(cache, ident, &got, &json));
    ck_assert_ptr_null(json);

    /* the kernel cache's disk part off: no store */
    remove_dir();
    make_dir();
    ck_assert_int_eq(lhc_cache_set_dir(cache, dir), LH_OK);
    lhc_cache_set_disk_enabled(cache, 0);
    ck_assert(!lh_plan_record_save(cache, ident, &meta, JSON));
    lhc_cache_set_disk_enabled(cache, 1);
    ck_assert(!lh_plan_record_load(cache, ident, &got, &json));
    lhc_cache_destroy(cache);
    remove_dir();
}
END_TEST

/* ---- the store's cuDNN calls against a stand-in ------------------------------------------- */

static struct {
    bool serialisable, refuse_text;
    int64_t workspace;        /* what a restored plan reports */
    char restored[256];       /* the text a restore was given */
    int live;                 /* descriptors created and not destroyed */
} fake;

static cudnnStatus_t fake_create(cudnnBackendDescriptorType_t type, cudnnBackendDescriptor_t *d) {
    (void)type;
    *d = (cudnnBackendDescriptor_t)(intptr_t)(0x1000 + fake.live++);
    return CUDNN_STATUS_SUCCESS;
}
static cudnnStatus_t fake_destroy(cudnnBackendDescriptor_t d) {
    (void)d;
    fake.live--;
    return CUDNN_STATUS_SUCCESS;
}
static cudnnStatus_t fake_finalize(cudnnBackendDescriptor_t d) {
    (void)d;
    return CUDNN_STATUS_SUCCESS;
}
static cudnnStatus_t fake_set(cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name,
                              cudnnBackendAttributeType_t type, int64_t count, const void *e) {
    (void)d, (void)type;
    if (name != CUDNN_ATTR_EXECUTION_PLAN_JSON_REPRESENTATION) return CUDNN_STATUS_SUCCESS;
    if (fake.refuse_text || count >= (int64_t)sizeof fake.restored)
        return CUDNN_STATUS_NOT_SUPPORTED;
    memcpy(fake.restored, e, (size_t)count);
    fake.restored[count] = '\0';
    return CUDNN_STATUS_SUCCESS;
}
static cudnnStatus_t fake_get(cudnnBackendDescriptor_t const d, cudnnBackendAttributeName_t name,
                              cudnnBackendAttributeType_t type, int64_t requested, int64_t *count,
                              void *e) {
    (void)d, (void)type;
    if (name == CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE) {
        *count = 1;
        *(int64_t *)e = fake.workspace;
        return CUDNN_STATUS_SUCCESS;
    }
    if (name != CUDNN_ATTR_EXECUTION_PLAN_JSON_REPRESENTATION || !fake.serialisable)
        return CUDNN_STATUS_NOT_SUPPORTED;
    *count = (int64_t)strlen(JSON) + 1; /* as cuDNN may: the terminator counted */
    if (requested > 0) memcpy(e, JSON, (size_t)(requested < *count ? requested : *count));
    return CUDNN_STATUS_SUCCESS;
}
static const char *fake_error(cudnnStatus_t s) {
    (void)s;
    return "stand-in";
}

START_TEST(store_calls_with_a_stand_in) {
    make_dir();
    lhc_cache *cache = NULL;
    ck_assert_int_eq(lhc_cache_create(&cache), LH_OK);
    ck_assert_int_eq(lhc_cache_set_dir(cache, dir), LH_OK);
    lh_cudnn_api api = {.BackendCreateDescriptor = fake_create,
                        .BackendDestroyDescriptor = fake_destroy,
                        .BackendFinalize = fake_finalize,
                        .BackendSetAttribute = fake_set,
                        .BackendGetAttribute = fake_get,
                        .GetErrorString = fake_error,
                        .version = 91900};
    lh_plan_store store = {.cache = cache, .sm = 90, .device = "stand-in GPU"};
    lh_plan_key shape = shape_of(1024);
    memset(&fake, 0, sizeof fake);
    fake.serialisable = true;
    fake.workspace = 4096;
    unsetenv("LIGHTHOUSE_CUDNN_PLAN_STORE");

    /* a built plan: what lh_gb_build_plan leaves */
    lh_gb built;
    lh_gb_init(&built, &api, NULL);
    fake_create(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &built.descriptors[0]);
    built.descriptor_count = 1;
    built.plan = built.descriptors[0];
    built.engine_id = 9, built.workspace_bytes = 4096, built.deterministic = true;
    ck_assert_int_eq(lh_plan_store_save(&store, &shape, 1, "backward", &built, 1),
                     LH_PLAN_STORE_SAVED);
    /* held: that identity only (read without cuDNN's help: no descriptor made) */
    ck_assert(lh_plan_store_enabled(&store));
    ck_assert(lh_plan_store_has(&store, &api, &shape, 1, "backward"));
    ck_assert(!lh_plan_store_has(&store, &api, &shape, 1, "forward"));
    ck_assert(!lh_plan_store_has(&store, &api, &shape, 2, "backward"));
    lh_plan_store other_gpu = {.cache = cache, .sm = 100, .device = "stand-in GPU"};
    ck_assert(!lh_plan_store_has(&other_gpu, &api, &shape, 1, "backward"));
    ck_assert_int_eq(fake.live, 1);

    lh_gb gb;
    int kind = 0;
    lh_gb_init(&gb, &api, NULL);
    ck_assert(lh_plan_store_restore(&store, &shape, 1, "backward", &gb, &kind));
    ck_assert_str_eq(fake.restored, JSON);
    ck_assert_ptr_nonnull(gb.plan);
    ck_assert_int_eq(gb.engine_id, 9);
    ck_assert_int_eq(gb.workspace_bytes, 4096);
    ck_assert(gb.deterministic);
    ck_assert_int_eq(kind, 1);
    ck_assert_int_eq(gb.graph_us + gb.heuristics_us, 0);
    lh_gb_destroy(&gb);
    /* other role, other graph version: nothing stored */
    lh_gb_init(&gb, &api, NULL);
    ck_assert(!lh_plan_store_restore(&store, &shape, 1, "forward", &gb, &kind));
    ck_assert(!lh_plan_store_restore(&store, &shape, 2, "backward", &gb, &kind));
    /* the restored plan asks for another workspace: not the same plan */
    fake.workspace = 8192;
    ck_assert(!lh_plan_store_restore(&store, &shape, 1, "backward", &gb, &kind));
    ck_assert_ptr_null(gb.plan);
    ck_assert_int_eq(gb.descriptor_count, 0);
    fake.workspace = 4096;
    /* cuDNN refuses the text */
    fake.refuse_text = true;
    ck_assert(!lh_plan_store_restore(&store, &shape, 1, "backward", &gb, &kind));
    ck_assert_ptr_null(gb.plan);
    fake.refuse_text = false;
    /* switched off */
    setenv("LIGHTHOUSE_CUDNN_PLAN_STORE", "0", 1);
    ck_assert(!lh_plan_store_enabled(&store));
    ck_assert(!lh_plan_store_has(&store, &api, &shape, 1, "backward"));
    ck_assert(!lh_plan_store_restore(&store, &shape, 1, "backward", &gb, &kind));
    ck_assert_int_eq(lh_plan_store_save(&store, &shape, 1, "backward", &built, 1),
                     LH_PLAN_STORE_OFF);
    unsetenv("LIGHTHOUSE_CUDNN_PLAN_STORE");
    ck_assert(lh_plan_store_restore(&store, &shape, 1, "backward", &gb, &kind));
    lh_gb_destroy(&gb);
    /* an engine cuDNN does not serialise */
    fake.serialisable = false;
    ck_assert_int_eq(lh_plan_store_save(&store, &shape, 1, "forward", &built, 0),
                     LH_PLAN_STORE_UNSERIALISED);
    ck_assert_int_eq(lh_plan_store_save(NULL, &shape, 1, "forward", &built, 0),
                     LH_PLAN_STORE_OFF);
    lh_gb_destroy(&built);
    ck_assert_int_eq(fake.live, 0);
    lhc_cache_destroy(cache);
    remove_dir();
}
END_TEST

/* A GPU described in text (runtime/cuda/cudnn_device.c): what is written reads back, and what
 * is not a whole description is refused with a sentence. */
START_TEST(device_text_round_trip_and_refusals) {
    const char *props = "{\"maxGridSize\":[1,2,3],\n \"multiProcessorCount\":132}";
    char *text = lh_device_text_encode("NVIDIA H100 80GB HBM3", 90, 91900, props);
    ck_assert_ptr_nonnull(text);
    lh_device_text d;
    ck_assert_int_eq(lh_device_text_parse(text, &d), LH_OK);
    ck_assert_str_eq(d.name, "NVIDIA H100 80GB HBM3");
    ck_assert_int_eq(d.sm, 90);
    ck_assert_int_eq((long long)d.cudnn_version, 91900);
    ck_assert_str_eq(d.properties, props);
    free(text);
    /* parts that cannot be written */
    ck_assert_ptr_null(lh_device_text_encode("two\nlines", 90, 91900, props));
    ck_assert_ptr_null(lh_device_text_encode("GPU", 90, 91900, ""));
    /* texts that are not descriptions, each with what is wrong */
    static const struct {
        const char *text, *fragment;
    } bad[] = {
        {"", "not a device description"},
        {"LHCP1\nname X\n", "not a device description"},
        {"LHDEV1\nsm 90\n", "no GPU name"},
        {"LHDEV1\nname \nsm 90\ncudnn 91900\n{}", "no GPU name"},
        {"LHDEV1\nname X\nsm nine\ncudnn 91900\n{}", "compute capability"},
        {"LHDEV1\nname X\nsm 9\ncudnn 91900\n{}", "compute capability"},
        {"LHDEV1\nname X\nsm 90\ncudnn\n{}", "cuDNN version"},
        {"LHDEV1\nname X\nsm 90\ncudnn -1\n{}", "cuDNN version"},
        {"LHDEV1\nname X\nsm 90\ncudnn 91900\n", "no cuDNN device properties"},
        {"LHDEV1\nname X\nsm 90\ncudnn 91900", "no cuDNN version"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        lh_clear_error();
        ck_assert_int_eq(lh_device_text_parse(bad[i].text, &d), LH_ERROR_INVALID_VALUE);
        ck_assert_msg(strstr(lh_error_message(), bad[i].fragment), "case %zu: '%s'", i,
                      lh_error_message());
    }
    ck_assert_int_eq(lh_device_text_parse(NULL, &d), LH_ERROR_INVALID_VALUE);
}
END_TEST

TCase *plan_record_tcase(void) {
    TCase *tc = tcase_create("plan_record");
    tcase_add_test(tc, identity_names_every_field);
    tcase_add_test(tc, record_round_trip_and_rejects);
    tcase_add_test(tc, store_round_trip_and_damage);
    tcase_add_test(tc, store_calls_with_a_stand_in);
    tcase_add_test(tc, device_text_round_trip_and_refusals);
    return tc;
}
