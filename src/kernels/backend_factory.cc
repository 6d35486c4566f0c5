#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#ifdef ENGRAM_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace engram {

Status ValidateWeightFormat(std::string_view weights) {
  if (weights == "auto" || weights == "bf16" || weights == "int8") return Status::Ok();
  return InvalidArgument("weights \"{}\" (expected auto, bf16 or int8)", weights);
}

Result<std::unique_ptr<Backend>> CreateBackend(const BackendOptions& options) {
  ENGRAM_RETURN_IF_ERROR(ValidateWeightFormat(options.weights));
  if (options.kind == "cpu") return CreateCpuBackend(options);
  if (options.kind == "cuda") {
#ifdef ENGRAM_HAVE_CUDA
    return CreateCudaBackend(options);
#else
    return Unavailable(
        "backend \"cuda\" is not built in (configure with ENGRAM_CUDA=ON on a "
        "machine with nvcc)");
#endif
  }
  return InvalidArgument("unknown backend \"{}\" (expected cpu or cuda)", options.kind);
}

}  // namespace engram
