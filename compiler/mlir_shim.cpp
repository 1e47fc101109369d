// mlir_shim.cpp - the three things the MLIR/LLVM C APIs cannot do; everything else is C.
//
// 1. Registering the NVVM target's serialisation interface (#nvvm.target -> PTX), the LLVM IR
//    translations of the builtin, llvm, nvvm and gpu dialects, and func's inliner interface.
//    The C API only offers mlirRegisterAllDialects / mlirRegisterAllLLVMTranslations, which
//    drag every dialect, extension and translation of MLIR into the library (173 MB instead of
//    ~50 MB).
// 2. Asking LLVM's NVPTX backend whether it knows a chip name. Given an unknown one, LLVM prints
//    a warning on stderr and quietly emits PTX for a default chip; the C API has no query.
// 3. The pass lhc-inline-helpers: every func.call of a kernel's func.func helpers replaced by
//    the helper's body, then the helpers dropped. MLIR's own inliner does not inline into a
//    gpu.func's body (the GPU dialect lets its ops be inlined elsewhere, but accepts nothing
//    into its functions), which is where most calls sit.
#include "mlir/CAPI/IR.h"
#include "mlir/Dialect/Func/Extensions/InlinerExtension.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/Pass/Pass.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/InliningUtils.h"
#include "mlir/Target/LLVM/NVVM/Target.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/GPU/GPUToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/NVVM/NVVMToLLVMIRTranslation.h"
#include "llvm/MC/MCSubtargetInfo.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/TargetParser/Triple.h"

#include <memory>
#include <string>

extern "C" void lhc_shim_register_nvvm(MlirDialectRegistry registry) {
  mlir::DialectRegistry &r = *unwrap(registry);
  mlir::NVVM::registerNVVMTargetInterfaceExternalModels(r);
  mlir::registerBuiltinDialectTranslation(r);
  mlir::registerLLVMDialectTranslation(r);
  mlir::registerNVVMDialectTranslation(r);
  mlir::registerGPUDialectTranslation(r);
  mlir::func::registerInlinerExtension(r); // func.call and func.return when inlining
}

namespace {

// Helpers are plain straight-line or scf code (one block, no recursion): any of their ops may
// go into any region, a gpu.func's body included.
struct HelperInliner final : mlir::InlinerInterface {
  using InlinerInterface::InlinerInterface;
  bool isLegalToInline(mlir::Region *, mlir::Region *, bool, mlir::IRMapping &) const final { return true; }
  bool isLegalToInline(mlir::Operation *, mlir::Region *, bool, mlir::IRMapping &) const final { return true; }
};

struct InlineHelpersPass final : mlir::PassWrapper<InlineHelpersPass, mlir::OperationPass<>> {
  MLIR_DEFINE_EXPLICIT_INTERNAL_INLINE_TYPE_ID(InlineHelpersPass)
  llvm::StringRef getArgument() const final { return "lhc-inline-helpers"; }
  llvm::StringRef getDescription() const final {
    return "Inline every func.call of func.func helpers (also into gpu.func bodies), then drop the helpers";
  }
  void runOnOperation() final {
    mlir::Operation *root = getOperation();
    HelperInliner interface(&getContext());
    auto clone = [](mlir::OpBuilder &, mlir::Region *src, mlir::Block *inlineBlock, mlir::Block *postInsertBlock,
                    mlir::IRMapping &mapper, bool) {
      src->cloneInto(inlineBlock->getParent(), postInsertBlock->getIterator(), mapper);
    };
    // The calls in the kernels, one level per round: a helper's own calls come in with its
    // body (helpers themselves stay as written until they are dropped).
    for (int depth = 0;; depth++) {
      llvm::SmallVector<mlir::func::CallOp> calls;
      root->walk([&](mlir::func::CallOp call) {
        if (!call->getParentOfType<mlir::func::FuncOp>()) calls.push_back(call);
      });
      if (calls.empty()) break;
      if (depth == 16) {
        calls.front().emitError("helper calls nest more than 16 deep (does a helper call itself?)");
        return signalPassFailure();
      }
      for (mlir::func::CallOp call : calls) {
        auto callee = mlir::SymbolTable::lookupNearestSymbolFrom<mlir::func::FuncOp>(call, call.getCalleeAttr());
        if (!callee || callee.isExternal() ||
            mlir::failed(mlir::inlineCall(interface, clone, call, callee, &callee.getBody()))) {
          call.emitError("cannot inline the call of ") << call.getCalleeAttr();
          return signalPassFailure();
        }
        call.erase();
      }
    }
    llvm::SmallVector<mlir::func::FuncOp> helpers;
    root->walk([&](mlir::func::FuncOp helper) { helpers.push_back(helper); });
    for (mlir::func::FuncOp helper : helpers) helper.erase();
  }
};

} // namespace

// Once per process, before the pipeline text that names the pass is parsed.
extern "C" void lhc_shim_register_passes(void) { mlir::PassRegistration<InlineHelpersPass>(); }

// 1 known, 0 unknown, -1 the NVPTX backend is missing. Cheap: called once per compile, after
// the caller initialised the NVPTX target (once per process).
extern "C" int lhc_shim_chip_known(const char *chip) {
  llvm::Triple triple("nvptx64-nvidia-cuda");
  std::string error;
  const llvm::Target *target = llvm::TargetRegistry::lookupTarget(triple, error);
  if (!target) return -1;
  std::unique_ptr<llvm::MCSubtargetInfo> sti(target->createMCSubtargetInfo(triple, "", ""));
  if (!sti) return -1;
  return sti->isCPUStringValid(chip) ? 1 : 0;
}
