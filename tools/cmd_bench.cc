// engram bench forward: prefill and decode throughput of the offline engine, printed beside
// the machine's bounds measured in the same run (memory bandwidth for weight streaming, the
// FMA rate for prefill arithmetic). With --weights int8 the bytes are the int8 format's (1.125
// bytes per weight) and the prefill bound is the int8 dot-product peak (MeasureInt8Gops).
// engram bench kernels: the kernel table of RunKernelBench (kernel_bench.h), bounds included.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "engine_args.h"
#include "kernels/cpu/kernel_bench.h"
#include "kernels/cpu/machine_bounds.h"

namespace engram::cli {
namespace {

using Clock = std::chrono::steady_clock;

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Bytes of the matrices a decode step streams and the multiply-adds they imply. Every token
// of a step runs the backbone's Linears, but only the last token of each sequence runs the
// lm_head (the engine computes logits for that token only), so a prefill of L tokens costs
// L * body_flops_per_token + head_flops, not L * (body + head). The int8_* parts are the flops
// of weights that run as int8 dot products (bounded by the int8 peak, the rest by the FMA peak).
struct ModelCost {
  double weight_bytes = 0;               // every Linear weight, read once per step
  double body_flops_per_token = 0;       // Linears other than the lm_head, per token
  double head_flops = 0;                 // the lm_head, per sequence (its last token)
  double int8_body_flops_per_token = 0;  // the part of body_flops_per_token run in int8
  double int8_head_flops = 0;            // the part of head_flops run in int8
  double flops_per_token() const { return body_flops_per_token + head_flops; }  // decode
  // Flops of a prefill of `len` tokens of one sequence, all or the int8 part.
  double prefill_flops(double len) const { return len * body_flops_per_token + head_flops; }
  double int8_prefill_flops(double len) const {
    return len * int8_body_flops_per_token + int8_head_flops;
  }
};

// The format a Linear weight stored as `dtype` runs in when the engine reports `format`
// (Engine::weight_format): that format for every weight, except "mixed" (quantized files with
// some weights kept in BF16, e.g. pack quantize --keep-lm-head), where each weight runs in the
// format it is stored in (the CPU backend's "auto").
std::string RunFormat(DType dtype, const std::string& format) {
  if (format != "mixed") return format;
  if (dtype == DType::kI8) return "int8";
  if (dtype == DType::kF8E4M3) return "fp8";
  return "as stored";
}

// Bytes a Linear weight [n, k] streams in the format it runs in (RunFormat): "int8" 32
// one-byte values plus a 4-byte scale per block of 32 inputs per row; "fp8" one byte per value
// plus a 4-byte factor per 16 rows and 32 inputs; otherwise as stored, quantized files
// dequantized to BF16.
double LinearBytes(double n, double k, DType dtype, const std::string& format) {
  if (format == "int8") return n * std::ceil(k / 32) * 36;
  if (format == "fp8") return n * k + std::ceil(n / 16) * std::ceil(k / 32) * 4;
  const bool quantized = dtype == DType::kF8E4M3 || dtype == DType::kI8;
  return n * k * (quantized ? 2.0 : static_cast<double>(DTypeSize(dtype)));
}

ModelCost CostOf(const ModelConfig& c, const TensorStore& store, const std::string& format) {
  ModelCost m;
  auto add = [&](double rows, double cols, DType dtype, bool head) {
    const std::string run = RunFormat(dtype, format);
    m.weight_bytes += LinearBytes(rows, cols, dtype, run);
    const double flops = 2 * rows * cols;
    (head ? m.head_flops : m.body_flops_per_token) += flops;
    if (run == "int8") (head ? m.int8_head_flops : m.int8_body_flops_per_token) += flops;
  };
  for (const std::string& name : store.Names()) {
    const TensorInfo* info = store.Info(name);
    const bool matrix = info->shape.size() == 2 && name.find("embed_tokens") == std::string::npos &&
                        name.find("multi_head_embedding") == std::string::npos &&
                        !name.ends_with("_scale_inv") && !name.ends_with(".scale");
    if (!matrix) continue;
    add(static_cast<double>(info->shape[0]), static_cast<double>(info->shape[1]), info->dtype,
        name == "lm_head.weight");
  }
  if (c.tie_word_embeddings) {
    add(static_cast<double>(c.vocab_size), static_cast<double>(c.hidden_size),
        store.Info("model.embed_tokens.weight")->dtype, /*head=*/true);
  }
  return m;
}

struct Measured {
  double prefill_tok_s = 0;
  std::vector<std::pair<int, double>> decode_tok_s;  // batch -> tok/s
};

Result<double> TimePrefill(Engine& e, int len, int repeats) {
  std::vector<int32_t> prompt(static_cast<size_t>(len));
  for (int i = 0; i < len; ++i)
    prompt[i] = static_cast<int32_t>((i * 7919 + 13) % e.config().vocab_size);
  std::vector<double> times;
  for (int r = 0; r < repeats + 1; ++r) {
    ENGRAM_ASSIGN_OR_RETURN(SeqId s, e.AddSequence());
    StepChunk ch{s, prompt};
    const auto t0 = Clock::now();
    auto out = e.Step({&ch, 1}, false);
    const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
    e.RemoveSequence(s);
    if (!out.ok()) return out.status();
    if (r > 0) times.push_back(dt);  // first run warms caches and scratch
  }
  return len / Median(times);
}

Result<double> TimeDecode(Engine& e, int batch, int steps, int prompt_len) {
  std::vector<SeqId> seqs;
  std::vector<std::vector<int32_t>> next(static_cast<size_t>(batch));
  std::vector<StepChunk> chunks;
  const int64_t V = e.config().vocab_size;
  for (int b = 0; b < batch; ++b) {
    ENGRAM_ASSIGN_OR_RETURN(SeqId s, e.AddSequence());
    seqs.push_back(s);
    std::vector<int32_t> prompt(static_cast<size_t>(prompt_len));
    for (int i = 0; i < prompt_len; ++i)
      prompt[i] = static_cast<int32_t>((b * 131 + i * 17 + 5) % V);
    StepChunk ch{s, prompt};
    auto out = e.Step({&ch, 1}, false);
    if (!out.ok()) return out.status();
    next[b] = {static_cast<int32_t>((b * 31 + 7) % V)};
  }
  std::vector<double> times;
  Status st;
  for (int step = 0; step < steps + 2 && st.ok(); ++step) {
    chunks.clear();
    for (int b = 0; b < batch; ++b) chunks.push_back({seqs[b], next[b]});
    const auto t0 = Clock::now();
    auto out = e.Step(chunks, false);
    const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
    if (!out.ok()) {
      st = out.status();
      break;
    }
    if (step >= 2) times.push_back(dt);  // two warm-up steps
    for (int b = 0; b < batch; ++b) {
      next[b][0] = static_cast<int32_t>((next[b][0] * 7 + step + 1) % V);
    }
  }
  for (SeqId s : seqs) e.RemoveSequence(s);
  ENGRAM_RETURN_IF_ERROR(st);
  return batch / Median(times);
}

Status BenchForward(const Args& args) {
  ENGRAM_ASSIGN_OR_RETURN(long long prompt_len, args.GetInt("prompt-len", 256));
  ENGRAM_ASSIGN_OR_RETURN(long long steps, args.GetInt("decode-steps", 16));
  ENGRAM_ASSIGN_OR_RETURN(long long repeats, args.GetInt("repeats", 3));
  ENGRAM_ASSIGN_OR_RETURN(long long threads, args.GetInt("threads", 0));
  std::vector<long long> batches = {1, 16};
  if (args.Has("batches")) {
    ENGRAM_ASSIGN_OR_RETURN(batches, args.GetIntList("batches"));
  }
  if (prompt_len < 1 || steps < 1 || repeats < 1) {
    return InvalidArgument("--prompt-len, --decode-steps and --repeats must be >= 1");
  }
  ENGRAM_ASSIGN_OR_RETURN(auto engine, OpenEngine(args));
  // The format the weights run in (the files' with --weights auto).
  const std::string weights = engine->weight_format();
  const ModelCost cost = CostOf(engine->config(), engine->files().store, weights);
  Measured m;
  ENGRAM_ASSIGN_OR_RETURN(m.prefill_tok_s, TimePrefill(*engine, static_cast<int>(prompt_len),
                                                       static_cast<int>(repeats)));
  for (long long b : batches) {
    ENGRAM_ASSIGN_OR_RETURN(double tps,
                            TimeDecode(*engine, static_cast<int>(b), static_cast<int>(steps), 32));
    m.decode_tok_s.emplace_back(static_cast<int>(b), tps);
  }
  const int bound_threads = threads > 0 ? static_cast<int>(threads)
                                        : static_cast<int>(std::thread::hardware_concurrency());
  // The bounds are the CPU's; on another backend they are not measured (reported as 0).
  const bool cpu = engine->backend().device() == Device::kCpu;
  const double bw = cpu ? MeasureMemoryBandwidthGBs(bound_threads) : 0.0;
  const double fma = cpu ? MeasureFmaGflops(bound_threads) : 0.0;
  // Prefill: one sequence of prompt_len tokens, the lm_head run for its last token only; the
  // int8 weights' flops against the int8 dot-product peak, the others' against the FMA peak.
  const double len = static_cast<double>(prompt_len);
  const double int8_flops = cost.int8_prefill_flops(len);
  const double float_flops = cost.prefill_flops(len) - int8_flops;
  const bool int8 = int8_flops > 0;
  const double int8_gops = cpu && int8 ? MeasureInt8Gops(bound_threads) : 0.0;
  const std::string prefill_bound_name = !int8             ? "F32 FMA peak"
                                         : float_flops > 0 ? "int8 dot-product and F32 FMA peaks"
                                                           : "int8 dot-product peak";
  // tok/s bounds; infinite (so the fractions read 0) where not measured.
  const double decode_bound = cpu ? bw * 1e9 / cost.weight_bytes : INFINITY;
  const double prefill_s = (int8 ? int8_flops / (int8_gops * 1e9) : 0.0) +
                           (float_flops > 0 ? float_flops / (fma * 1e9) : 0.0);
  const double prefill_bound =
      cpu && (!int8 || int8_gops > 0) && prefill_s > 0 ? len / prefill_s : INFINITY;
  if (args.Flag("json")) {
    nlohmann::json j;
    j["model"] = engine->files().source;
    j["backend"] = std::string(engine->backend().name());
    j["weights"] = weights;
    j["prefill_tok_s"] = m.prefill_tok_s;
    j["prefill_bound_tok_s"] = prefill_bound;
    j["decode_batch1_bound_tok_s"] = decode_bound;
    for (auto [b, tps] : m.decode_tok_s) {
      if (b == 1) j["decode_batch1_tok_s"] = tps;
      if (b == 16) j["decode_batch16_tok_s"] = tps;
    }
    j["weight_bytes"] = cost.weight_bytes;
    j["flops_per_token"] = cost.flops_per_token();
    j["body_flops_per_token"] = cost.body_flops_per_token;
    j["head_flops_per_sequence"] = cost.head_flops;
    j["prefill_flops"] = cost.prefill_flops(len);
    j["prefill_int8_flops"] = int8_flops;
    j["bandwidth_gbs"] = bw;
    j["fma_gflops"] = fma;
    j["int8_gops"] = int8_gops;
    j["prefill"] = {{"prompt_len", prompt_len},
                    {"tok_s", m.prefill_tok_s},
                    {"bound_tok_s", prefill_bound},
                    {"bound", prefill_bound_name},
                    {"fraction_of_bound", m.prefill_tok_s / prefill_bound},
                    // kept for older readers; with int8 weights it is the int8 peak's
                    {"fraction_of_fma_bound", m.prefill_tok_s / prefill_bound}};
    for (auto [b, tps] : m.decode_tok_s) {
      j["decode"][std::to_string(b)] = {{"tok_s", tps},
                                        {"fraction_of_bandwidth_bound", tps / (decode_bound * b)}};
    }
    const GraphStats g = engine->graph_stats();
    j["cuda_graphs"] = {{"enabled", engine->cuda_graphs()},
                        {"captures", g.captures},
                        {"replays", g.replays},
                        {"capture_failures", g.capture_failures},
                        {"capture_s", g.capture_s}};
    std::printf("%s\n", j.dump(2).c_str());
    return Status::Ok();
  }
  std::printf("model %s on %s, %s weights\n", engine->files().source.c_str(),
              std::string(engine->backend().name()).c_str(), weights.c_str());
  std::printf(
      "weights streamed per step: %.3f GB; %.3f GFLOP per decode token (lm_head %.3f); "
      "prefill %lld tokens: %.3f GFLOP (lm_head for the last token only)\n",
      cost.weight_bytes / 1e9, cost.flops_per_token() / 1e9, cost.head_flops / 1e9, prompt_len,
      cost.prefill_flops(static_cast<double>(prompt_len)) / 1e9);
  if (int8) {
    std::printf(
        "bounds (%d threads): read bandwidth %.2f GB/s -> batch-1 decode <= %.2f tok/s; "
        "int8 dot products %.1f GOP/s (%.0f%% of the prefill's flops), F32 FMA %.1f GFLOP/s -> "
        "prefill <= %.1f tok/s\n",
        bound_threads, bw, decode_bound, int8_gops, 100 * int8_flops / cost.prefill_flops(len), fma,
        prefill_bound);
  } else {
    std::printf(
        "bounds (%d threads): read bandwidth %.2f GB/s -> batch-1 decode <= %.2f tok/s; "
        "FMA %.1f GFLOP/s -> prefill <= %.1f tok/s\n",
        bound_threads, bw, decode_bound, fma, prefill_bound);
  }
  std::printf("%-22s %12s %14s\n", "measurement", "tok/s", "of bound");
  std::printf("%-22s %12.1f %13.1f%%\n", ("prefill " + std::to_string(prompt_len)).c_str(),
              m.prefill_tok_s, 100 * m.prefill_tok_s / prefill_bound);
  for (auto [b, tps] : m.decode_tok_s) {
    std::printf("%-22s %12.2f %13.1f%%\n", ("decode batch " + std::to_string(b)).c_str(), tps,
                100 * tps / (decode_bound * b));
  }
  std::printf("(decode batch B bound = B x batch-1 bound: weights streamed once per step)\n");
  if (engine->cuda_graphs()) {
    const GraphStats g = engine->graph_stats();
    std::printf("CUDA graphs: %llu captured (%.1f ms), %llu replayed, %llu capture failures\n",
                static_cast<unsigned long long>(g.captures), g.capture_s * 1e3,
                static_cast<unsigned long long>(g.replays),
                static_cast<unsigned long long>(g.capture_failures));
  }
  return Status::Ok();
}

// --rows: a comma-separated subset of linear, int8, gathers (default all; int8 only on the CPU).
Status BenchKernels(const Args& args) {
  ENGRAM_ASSIGN_OR_RETURN(long long threads, args.GetInt("threads", 0));
  ENGRAM_ASSIGN_OR_RETURN(long long runs, args.GetInt("runs", 7));
  if (threads < 0 || threads > 4096 || runs < 1 || runs > 10000) {
    return InvalidArgument("--threads must be in [0, 4096] and --runs in [1, 10000]");
  }
  KernelBenchOptions bench;
  bench.threads = static_cast<int>(threads);
  bench.runs = static_cast<int>(runs);
  const std::string kind = args.Get("backend").value_or("cpu");
  bool int8 = kind == "cpu";
  if (args.Has("rows")) {
    bench.linear_attention = bench.gathers = int8 = false;
    ENGRAM_ASSIGN_OR_RETURN(std::vector<std::string> rows, args.GetList("rows"));
    for (const std::string& r : rows) {
      if (r == "linear") {
        bench.linear_attention = true;
      } else if (r == "int8") {
        int8 = true;
      } else if (r == "gathers") {
        bench.gathers = true;
      } else {
        return InvalidArgument(
            "--rows: \"{}\" (expected a comma-separated subset of linear, int8, gathers)", r);
      }
    }
  }
  BackendOptions options;
  options.kind = kind;
  options.threads = bench.threads;
  if (int8 && options.kind != "cpu") {
    return InvalidArgument("--rows int8 needs --backend cpu (the int8 kernels are the CPU's)");
  }
  ENGRAM_ASSIGN_OR_RETURN(auto backend, CreateBackend(options));
  std::unique_ptr<Backend> int8_backend;
  if (int8) {
    options.weights = "int8";
    ENGRAM_ASSIGN_OR_RETURN(int8_backend, CreateBackend(options));
    bench.int8_backend = int8_backend.get();
  }
  std::printf("%s", RunKernelBench(*backend, bench).c_str());
  return Status::Ok();
}

}  // namespace

int RunBench(int argc, char** argv) {
  if (argc >= 3 && std::string(argv[2]) == "kernels") {
    auto args = Args::Parse(argc, argv, 3, {"threads", "runs", "rows", "backend"}, {"help"});
    if (!args.ok()) return Fail("bench kernels", args.status()) + 1;
    if (args->Flag("help")) {
      std::printf(
          "usage: engram bench kernels [--threads N] [--runs N] [--rows linear,int8,gathers] "
          "[--backend cpu|cuda]\n");
      return 0;
    }
    Status st = BenchKernels(*args);
    return st.ok() ? 0 : Fail("bench kernels", st);
  }
  if (argc < 3 || std::string(argv[2]) != "forward") {
    std::fprintf(
        stderr,
        "usage: engram bench forward --model DIR|synth:PRESET [--prompt-len N] "
        "[--decode-steps N] [--batches 1,16] [--repeats N] [--threads N] [--backend cpu|cuda] "
        "[--cuda-graphs on|off] [--weights auto|bf16|int8] [--json]\n"
        "       engram bench kernels [--threads N] [--runs N] [--rows linear,int8,gathers] "
        "[--backend cpu|cuda]\n");
    return 2;
  }
  auto names = EngineOptionNames();
  names.insert({"prompt-len", "decode-steps", "batches", "repeats"});
  auto args = Args::Parse(argc, argv, 3, names, {"help", "json"});
  if (!args.ok()) return Fail("bench forward", args.status()) + 1;
  Status st = BenchForward(*args);
  return st.ok() ? 0 : Fail("bench forward", st);
}

}  // namespace engram::cli
