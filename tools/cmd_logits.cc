// engram logits: float32 logits [T, vocab] of a token sequence, as a .npy file.
#include <cstdio>
#include <vector>

#include "commands.h"
#include "common/npy.h"
#include "engine_args.h"

namespace engram::cli {
namespace {

Status Logits(const Args& args) {
  ENGRAM_ASSIGN_OR_RETURN(std::vector<long long> ids64, args.GetIntList("ids"));
  ENGRAM_ASSIGN_OR_RETURN(std::string out, args.Require("out"));
  const std::string mode = args.Get("mode").value_or("prefill");
  if (mode != "prefill" && mode != "decode") {
    return InvalidArgument("--mode \"{}\" must be prefill or decode", mode);
  }
  std::vector<int32_t> ids;
  for (long long v : ids64) {
    if (v < 0 || v > INT32_MAX) return OutOfRange("token id {} is negative or too large", v);
    ids.push_back(static_cast<int32_t>(v));
  }
  ENGRAM_ASSIGN_OR_RETURN(auto engine, OpenEngine(args));
  const int64_t V = engine->config().vocab_size;
  ENGRAM_ASSIGN_OR_RETURN(SeqId seq, engine->AddSequence());
  std::vector<float> logits;
  if (mode == "prefill") {
    StepChunk ch{seq, ids};
    ENGRAM_ASSIGN_OR_RETURN(logits, engine->Step({&ch, 1}, /*all_logits=*/true));
  } else {
    for (size_t i = 0; i < ids.size(); ++i) {
      StepChunk ch{seq, std::span<const int32_t>(&ids[i], 1)};
      ENGRAM_ASSIGN_OR_RETURN(std::vector<float> row, engine->Step({&ch, 1}, false));
      logits.insert(logits.end(), row.begin(), row.end());
    }
  }
  ENGRAM_RETURN_IF_ERROR(WriteNpyF32(out, {static_cast<int64_t>(ids.size()), V}, logits.data()));
  std::fprintf(stderr, "wrote %s: [%zu, %lld] float32 (%s)\n", out.c_str(), ids.size(),
               static_cast<long long>(V), mode.c_str());
  return Status::Ok();
}

}  // namespace

int RunLogits(int argc, char** argv) {
  auto names = EngineOptionNames();
  names.insert({"ids", "out", "mode"});
  auto args = Args::Parse(argc, argv, 2, names, {"help"});
  if (!args.ok()) return Fail("logits", args.status()) + 1;
  if (args->Flag("help")) {
    std::fprintf(
        stderr,
        "engram logits --model DIR|synth:PRESET --ids 1,2,3 --out FILE.npy "
        "[--mode prefill|decode] [--backend cpu|cuda] [--threads N] [--weights auto|bf16|int8]\n");
    return 0;
  }
  Status st = Logits(*args);
  return st.ok() ? 0 : Fail("logits", st);
}

}  // namespace engram::cli
