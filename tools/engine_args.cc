#include "engine_args.h"

#include <cstdio>

namespace engram::cli {

std::set<std::string> EngineOptionNames() {
  return {"model", "backend", "threads", "kv-tokens", "max-seqs", "cuda-graphs", "weights"};
}

Result<std::unique_ptr<Engine>> OpenEngine(const Args& args) {
  ENGRAM_ASSIGN_OR_RETURN(std::string spec, args.Require("model"));
  EngineOptions opt;
  opt.backend.kind = args.Get("backend").value_or("cpu");
  ENGRAM_ASSIGN_OR_RETURN(opt.backend.cuda_graphs, args.GetOnOff("cuda-graphs", false));
  opt.backend.weights = args.Get("weights").value_or("auto");
  if (opt.backend.weights != "auto" && opt.backend.weights != "bf16" &&
      opt.backend.weights != "int8") {
    return InvalidArgument("--weights \"{}\" (expected auto, bf16 or int8)", opt.backend.weights);
  }
  ENGRAM_ASSIGN_OR_RETURN(long long threads, args.GetInt("threads", 0));
  ENGRAM_ASSIGN_OR_RETURN(long long kv, args.GetInt("kv-tokens", 32768));
  ENGRAM_ASSIGN_OR_RETURN(long long seqs, args.GetInt("max-seqs", 64));
  if (threads < 0) return InvalidArgument("--threads {} must be >= 0", threads);
  if (kv < 16) return InvalidArgument("--kv-tokens {} must be >= 16", kv);
  if (seqs < 1) return InvalidArgument("--max-seqs {} must be >= 1", seqs);
  opt.backend.threads = static_cast<int>(threads);
  opt.kv_tokens = kv;
  opt.max_seqs = static_cast<int>(seqs);
  ENGRAM_ASSIGN_OR_RETURN(ModelFiles files, OpenModel(spec));
  return Engine::Create(std::move(files), opt);
}

int Fail(const char* cmd, const Status& st) {
  std::fprintf(stderr, "engram %s: %s\n", cmd, st.ToString().c_str());
  return 1;
}

}  // namespace engram::cli
