// engram generate: offline generation from prompt token ids.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "client.h"
#include "commands.h"
#include "engine_args.h"
#include "model/sampler.h"

namespace engram::cli {
namespace {

Status Generate(const Args& args) {
  ENGRAM_ASSIGN_OR_RETURN(std::vector<long long> ids64, args.GetIntList("prompt-ids"));
  ENGRAM_ASSIGN_OR_RETURN(long long max_tokens, args.GetInt("max-tokens", 16));
  SamplingParams sp;
  ENGRAM_ASSIGN_OR_RETURN(double temp, args.GetDouble("temperature", 0.0));
  ENGRAM_ASSIGN_OR_RETURN(long long top_k, args.GetInt("top-k", 0));
  ENGRAM_ASSIGN_OR_RETURN(double top_p, args.GetDouble("top-p", 1.0));
  ENGRAM_ASSIGN_OR_RETURN(long long seed, args.GetInt("seed", 0));
  sp.temperature = static_cast<float>(temp);
  sp.top_k = static_cast<int>(top_k);
  sp.top_p = static_cast<float>(top_p);
  sp.seed = static_cast<uint64_t>(seed);
  ENGRAM_RETURN_IF_ERROR(sp.Validate());
  if (max_tokens < 1) return InvalidArgument("--max-tokens {} must be >= 1", max_tokens);
  std::vector<int32_t> prompt;
  for (long long v : ids64) {
    if (v < 0 || v > INT32_MAX) return OutOfRange("token id {} is negative or too large", v);
    prompt.push_back(static_cast<int32_t>(v));
  }
  ENGRAM_ASSIGN_OR_RETURN(auto engine, OpenEngine(args));
  const auto& eos = engine->config().eos_token_ids;
  const bool ignore_eos = args.Flag("ignore-eos");
  ENGRAM_ASSIGN_OR_RETURN(SeqId seq, engine->AddSequence());
  Sampler sampler(sp);
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  StepChunk ch{seq, prompt};
  ENGRAM_ASSIGN_OR_RETURN(std::vector<float> logits, engine->Step({&ch, 1}, false));
  const auto t1 = Clock::now();
  std::vector<int32_t> out;
  std::printf("[");
  for (long long i = 0; i < max_tokens; ++i) {
    const int32_t tok = sampler.Sample(logits);
    out.push_back(tok);
    std::printf("%s%d", i ? ", " : "", tok);
    std::fflush(stdout);
    const bool stop = !ignore_eos && std::find(eos.begin(), eos.end(), tok) != eos.end();
    if (stop || i + 1 == max_tokens) break;
    StepChunk next{seq, std::span<const int32_t>(&out.back(), 1)};
    ENGRAM_ASSIGN_OR_RETURN(logits, engine->Step({&next, 1}, false));
  }
  std::printf("]\n");
  const auto t2 = Clock::now();
  const double prefill_s = std::chrono::duration<double>(t1 - t0).count();
  const double decode_s = std::chrono::duration<double>(t2 - t1).count();
  std::fprintf(stderr,
               "prompt %zu tokens in %.3f s (%.1f tok/s); %zu tokens generated in %.3f s "
               "(%.1f tok/s)\n",
               prompt.size(), prefill_s, prompt.size() / prefill_s, out.size(), decode_s,
               out.size() > 1 ? (out.size() - 1) / decode_s : 0.0);
  return Status::Ok();
}

}  // namespace

int RunGenerate(int argc, char** argv) {
  if (HasOption(argc, argv, 2, "server")) return RunGenerateClient(argc, argv);  // cmd_client.cc
  auto names = EngineOptionNames();
  names.insert({"prompt-ids", "max-tokens", "temperature", "top-k", "top-p", "seed"});
  auto args = Args::Parse(argc, argv, 2, names, {"help", "ignore-eos"});
  if (!args.ok()) return Fail("generate", args.status()) + 1;
  if (args->Flag("help")) {
    std::fprintf(stderr,
                 "engram generate --model DIR|synth:PRESET --prompt-ids 1,2,3 [--max-tokens N] "
                 "[--temperature T] [--top-k K] [--top-p P] [--seed S] [--ignore-eos] "
                 "[--backend cpu|cuda] [--threads N] [--weights auto|bf16|int8]\n");
    return 0;
  }
  Status st = Generate(*args);
  return st.ok() ? 0 : Fail("generate", st);
}

}  // namespace engram::cli
