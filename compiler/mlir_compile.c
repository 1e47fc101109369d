/*
 * mlir_compile.c - one kernel's MLIR text -> PTX, through the MLIR C API.
 *
 * Each call builds its own MLIRContext with only the dialects the kernels use, so compilations
 * on different threads share nothing but the pass registry (filled once). The pipeline is
 * spelled out pass by pass instead of gpu-lower-to-nvvm-pipeline: that pipeline is registered
 * only by C++ (or by mlirRegisterAllPasses, which links every pass of MLIR). convert-cf-to-llvm
 * runs on the whole module: it is a module pass, and convert-gpu-to-nvvm leaves cf ops alone
 * when the cf dialect's ConvertToLLVM interface is not registered (only C++ registers it).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <llvm-c/Core.h>
#include <mlir-c/Conversion.h>
#include <mlir-c/Diagnostics.h>
#include <mlir-c/Dialect/Arith.h>
#include <mlir-c/Dialect/ControlFlow.h>
#include <mlir-c/Dialect/Func.h>
#include <mlir-c/Dialect/GPU.h>
#include <mlir-c/Dialect/Index.h>
#include <mlir-c/Dialect/LLVM.h>
#include <mlir-c/Dialect/Math.h>
#include <mlir-c/Dialect/MemRef.h>
#include <mlir-c/Dialect/NVVM.h>
#include <mlir-c/Dialect/SCF.h>
#include <mlir-c/Dialect/Vector.h>
#include <mlir-c/BuiltinAttributes.h>
#include <mlir-c/IR.h>
#include <mlir-c/Pass.h>
#include <mlir-c/Transforms.h>

#include "compiler_internal.h"
#include "runtime.h"

/* LLVM's NVPTX target (C functions of libLLVMNVPTX*; registering is not thread-safe: once). */
void LLVMInitializeNVPTXTargetInfo(void);
void LLVMInitializeNVPTXTargetMC(void);

/* mlir_shim.cpp */
void lhc_shim_register_nvvm(MlirDialectRegistry registry);
void lhc_shim_register_passes(void);
int lhc_shim_chip_known(const char *chip);

/* Kernel bodies are lowered inside their gpu.module; then the module becomes a gpu.binary
 * holding PTX text (format=isa: no ptxas, no CUDA toolkit needed at run time). Math ops are left
 * to convert-gpu-to-nvvm, which would call libdevice: kernels use nvvm/inline PTX instead.
 * lhc-inline-helpers (mlir_shim.cpp) first puts the body of every func.func helper in place of
 * its calls and drops the helpers, so the lowering sees the code as if written out in place. */
static const char pipeline[] =
    "builtin.module(gpu.module(lhc-inline-helpers,convert-scf-to-cf,convert-vector-to-llvm,"
    "convert-arith-to-llvm,convert-index-to-llvm,convert-gpu-to-nvvm),convert-cf-to-llvm,"
    "gpu.module(canonicalize,cse,reconcile-unrealized-casts),gpu-module-to-binary{format=isa})";

static atomic_llong compile_count;
static pthread_once_t passes_once = PTHREAD_ONCE_INIT;
static char llvm_version[32];

static void register_passes(void) {
    lhc_shim_register_passes();
    mlirRegisterConversionSCFToControlFlowPass();
    mlirRegisterConversionConvertVectorToLLVMPass();
    mlirRegisterConversionArithToLLVMConversionPass();
    mlirRegisterConversionConvertIndexToLLVMPass();
    mlirRegisterConversionConvertGpuOpsToNVVMOps();
    mlirRegisterConversionConvertControlFlowToLLVMPass();
    mlirRegisterTransformsCanonicalizer();
    mlirRegisterTransformsCSE();
    mlirRegisterConversionReconcileUnrealizedCastsPass();
    mlirRegisterGPUGpuModuleToBinaryPass();
    LLVMInitializeNVPTXTargetInfo();
    LLVMInitializeNVPTXTargetMC();
    unsigned major = 0, minor = 0, patch = 0;
    LLVMGetVersion(&major, &minor, &patch);
    snprintf(llvm_version, sizeof llvm_version, "LLVM %u.%u.%u", major, minor, patch);
}

int lhc_available(void) { return 1; }
int64_t lhc_mlir_compile_count(void) { return atomic_load(&compile_count); }
const char *lhc_pipeline_text(void) { return pipeline; }

const char *lhc_llvm_version(void) {
    pthread_once(&passes_once, register_passes);
    return llvm_version;
}

/* MLIR's diagnostics, collected for the error message (the first ~3 KB are plenty). */
typedef struct diag_text {
    char text[3072];
    size_t len;
    const char *source; /* the specialised MLIR text, to quote the line a diagnostic points at */
} diag_text;

static void diag_append(MlirStringRef s, void *user) {
    diag_text *d = user;
    size_t room = sizeof d->text - 1 - d->len;
    size_t n = s.length < room ? s.length : room;
    memcpy(d->text + d->len, s.data, n);
    d->len += n;
    d->text[d->len] = '\0';
}

/* Appends " (line N: <that line of the specialised source>)" for a location "...":N:M). */
static void quote_source_line(diag_text *d, const char *loc) {
    const char *colon2 = strrchr(loc, ':');
    if (!colon2 || !d->source) return;
    const char *colon1 = colon2 - 1;
    while (colon1 > loc && *colon1 != ':') colon1--;
    long line = strtol(colon1 + 1, NULL, 10);
    if (*colon1 != ':' || line <= 0) return;
    const char *s = d->source;
    for (long i = 1; i < line && s; i++) {
        s = strchr(s, '\n');
        if (s) s++;
    }
    if (!s) return;
    while (*s == ' ') s++;
    int n = (int)strcspn(s, "\n");
    char quoted[200];
    snprintf(quoted, sizeof quoted, " (line %ld: %.*s)", line, n > 120 ? 120 : n, s);
    diag_append(mlirStringRefCreateFromCString(quoted), d);
}

static MlirLogicalResult on_diagnostic(MlirDiagnostic diag, void *user) {
    diag_text *d = user;
    if (d->len) diag_append(mlirStringRefCreateFromCString("; "), d);
    mlirDiagnosticPrint(diag, diag_append, d);
    diag_text loc = {.len = 0};
    mlirLocationPrint(mlirDiagnosticGetLocation(diag), diag_append, &loc);
    quote_source_line(d, loc.text);
    return mlirLogicalResultSuccess();
}

static MlirContext make_context(void) {
    MlirDialectRegistry registry = mlirDialectRegistryCreate();
    MlirDialectHandle dialects[] = {
        mlirGetDialectHandle__gpu__(),   mlirGetDialectHandle__nvvm__(),  mlirGetDialectHandle__llvm__(),
        mlirGetDialectHandle__arith__(), mlirGetDialectHandle__vector__(), mlirGetDialectHandle__scf__(),
        mlirGetDialectHandle__cf__(),    mlirGetDialectHandle__math__(),  mlirGetDialectHandle__index__(),
        mlirGetDialectHandle__func__(),  mlirGetDialectHandle__memref__(),
    };
    for (size_t i = 0; i < sizeof dialects / sizeof dialects[0]; i++)
        mlirDialectHandleInsertDialect(dialects[i], registry);
    lhc_shim_register_nvvm(registry);
    /* No thread pool: kernels are small and the caller may compile from several threads. */
    MlirContext ctx = mlirContextCreateWithRegistry(registry, false);
    mlirDialectRegistryDestroy(registry);
    return ctx;
}

/* The PTX of the first gpu.binary in the module, copied; NULL if there is none. */
static char *extract_ptx(MlirModule module) {
    MlirBlock body = mlirModuleGetBody(module);
    for (MlirOperation op = mlirBlockGetFirstOperation(body); !mlirOperationIsNull(op);
         op = mlirOperationGetNextInBlock(op)) {
        MlirAttribute objects = mlirOperationGetAttributeByName(op, mlirStringRefCreateFromCString("objects"));
        if (mlirAttributeIsNull(objects) || !mlirAttributeIsAArray(objects) ||
            mlirArrayAttrGetNumElements(objects) < 1)
            continue;
        MlirAttribute object = mlirArrayAttrGetElement(objects, 0);
        if (!mlirAttributeIsAGPUObjectAttr(object)) continue;
        MlirStringRef text = mlirGPUObjectAttrGetObject(object);
        char *ptx = malloc(text.length + 1);
        if (!ptx) return NULL;
        memcpy(ptx, text.data, text.length);
        ptx[text.length] = '\0';
        return ptx;
    }
    return NULL;
}

lh_status lhc_mlir_to_ptx(const char *kernel, const char *mlir_text, const char *chip, char **ptx) {
    pthread_once(&passes_once, register_passes);
    int known = lhc_shim_chip_known(chip);
    if (known != 1)
        return lh_fail(LH_ERROR_COMPILE,
                       "kernel %s: LLVM's NVPTX backend does not know chip \"%s\" (it knows e.g. "
                       "sm_90, sm_90a, sm_100, sm_100a, sm_120)", kernel, chip);
    atomic_fetch_add(&compile_count, 1);

    diag_text *diag = calloc(1, sizeof *diag);
    if (!diag) return lh_fail(LH_ERROR_OUT_OF_HOST_MEMORY, "kernel %s: out of host memory", kernel);
    diag->source = mlir_text;
    MlirContext ctx = make_context();
    mlirContextAttachDiagnosticHandler(ctx, on_diagnostic, diag, NULL);

    lh_status st = LH_OK;
    MlirModule module = mlirModuleCreateParse(ctx, mlirStringRefCreateFromCString(mlir_text));
    MlirPassManager pm = {NULL};
    if (mlirModuleIsNull(module)) {
        st = lh_fail(LH_ERROR_COMPILE, "kernel %s: MLIR could not parse the specialised source: %s",
                     kernel, diag->text);
    } else {
        pm = mlirPassManagerCreate(ctx);
        MlirOpPassManager opm = mlirPassManagerGetAsOpPassManager(pm);
        if (mlirLogicalResultIsFailure(
                mlirParsePassPipeline(opm, mlirStringRefCreateFromCString(pipeline), diag_append, diag)))
            st = lh_fail(LH_ERROR_INTERNAL, "kernel %s: the pass pipeline does not parse: %s", kernel,
                         diag->text);
        else if (mlirLogicalResultIsFailure(mlirPassManagerRunOnOp(pm, mlirModuleGetOperation(module))))
            st = lh_fail(LH_ERROR_COMPILE, "kernel %s for %s: MLIR failed to lower it to PTX: %s",
                         kernel, chip, diag->text);
        else if (!(*ptx = extract_ptx(module)))
            st = lh_fail(LH_ERROR_COMPILE, "kernel %s for %s: the lowered module holds no PTX", kernel,
                         chip);
    }
    if (pm.ptr) mlirPassManagerDestroy(pm);
    if (!mlirModuleIsNull(module)) mlirModuleDestroy(module);
    mlirContextDestroy(ctx);
    free(diag);
    return st;
}
