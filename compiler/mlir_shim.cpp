// mlir_shim.cpp - the two things the MLIR/LLVM C APIs cannot do; everything else is C.
//
// 1. Registering the NVVM target's serialisation interface (#nvvm.target -> PTX) and the LLVM IR
//    translations of the builtin, llvm, nvvm and gpu dialects. The C API only offers
//    mlirRegisterAllDialects / mlirRegisterAllLLVMTranslations, which drag every dialect,
//    extension and translation of MLIR into the library (173 MB instead of ~50 MB).
// 2. Asking LLVM's NVPTX backend whether it knows a chip name. Given an unknown one, LLVM prints
//    a warning on stderr and quietly emits PTX for a default chip; the C API has no query.
#include "mlir/CAPI/IR.h"
#include "mlir/IR/DialectRegistry.h"
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
}

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
