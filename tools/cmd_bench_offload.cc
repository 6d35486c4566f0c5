// engram bench offload: one workload over real text, in one run, with the Engram tables in
// four places: resident (the fastest tier), dram (host tier, prefetch), nvme (NVMe tier via
// io_uring + O_DIRECT, DRAM row cache = --cache-fraction of the tables), and sync (host tier,
// rows read when the layer needs them). Throughput loss = 1 - tok/s / resident tok/s.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "engine_args.h"
#include "model/tokenizer.h"
#include "model/weights.h"

namespace engram::cli {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// Every regular file under `path` (or the file itself), concatenated.
Result<std::string> ReadCorpus(const std::string& path) {
  std::error_code ec;
  std::vector<fs::path> files;
  if (fs::is_directory(path, ec)) {
    for (const auto& e : fs::recursive_directory_iterator(path, ec)) {
      if (e.is_regular_file(ec)) files.push_back(e.path());
    }
    std::sort(files.begin(), files.end());
  } else if (fs::is_regular_file(path, ec)) {
    files.push_back(path);
  }
  if (files.empty()) return NotFound("--corpus {}: no files to read", path);
  std::string text;
  for (const fs::path& f : files) {
    std::ifstream in(f, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    text += ss.str();
    text += "\n";
  }
  return text;
}

struct Workload {
  std::vector<int32_t> stream;  // the corpus as token ids
  int batch = 16;
  int prompt_len = 128;
  int decode_steps = 32;
};

// Prefill `batch` prompts (consecutive corpus slices), then decode by feeding each sequence
// the corpus's next tokens (teacher forcing: the traffic is real text's n-grams). Returns
// tokens per second over prefill and decode.
Result<double> Run(Engine& e, const Workload& w) {
  std::vector<SeqId> seqs;
  std::vector<StepChunk> chunks;
  const size_t span = static_cast<size_t>(w.prompt_len + w.decode_steps);
  const auto t0 = Clock::now();
  for (int b = 0; b < w.batch; ++b) {
    ENGRAM_ASSIGN_OR_RETURN(SeqId s, e.AddSequence());
    seqs.push_back(s);
  }
  Status st;
  for (int b = 0; b < w.batch; ++b) {
    const size_t start = (static_cast<size_t>(b) * span) % (w.stream.size() - span);
    chunks.push_back({seqs[b], std::span<const int32_t>(w.stream.data() + start,
                                                        static_cast<size_t>(w.prompt_len))});
  }
  if (auto r = e.Step(chunks, false); !r.ok()) st = r.status();
  for (int step = 0; step < w.decode_steps && st.ok(); ++step) {
    for (int b = 0; b < w.batch; ++b) {
      const size_t start = (static_cast<size_t>(b) * span) % (w.stream.size() - span);
      chunks[b].tokens = std::span<const int32_t>(
          w.stream.data() + start + static_cast<size_t>(w.prompt_len + step), 1);
    }
    if (auto r = e.Step(chunks, false); !r.ok()) st = r.status();
  }
  const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
  for (SeqId s : seqs) e.RemoveSequence(s);
  ENGRAM_RETURN_IF_ERROR(st);
  return static_cast<double>(w.batch) * (w.prompt_len + w.decode_steps) / dt;
}

Status BenchOffload(const Args& args) {
  ENGRAM_ASSIGN_OR_RETURN(std::string model, args.Require("model"));
  const std::string corpus = args.Get("corpus").value_or("/usr/share/common-licenses");
  ENGRAM_ASSIGN_OR_RETURN(
      std::vector<long long> batches,
      args.Has("batches") ? args.GetIntList("batches") : Result<std::vector<long long>>({16, 64}));
  ENGRAM_ASSIGN_OR_RETURN(long long prompt_len, args.GetInt("prompt-len", 128));
  ENGRAM_ASSIGN_OR_RETURN(long long decode_steps, args.GetInt("decode-steps", 32));
  ENGRAM_ASSIGN_OR_RETURN(double cache_fraction, args.GetDouble("cache-fraction", 0.10));
  ENGRAM_ASSIGN_OR_RETURN(long long threads, args.GetInt("threads", 0));
  ENGRAM_ASSIGN_OR_RETURN(long long repeats, args.GetInt("repeats", 3));
  if (prompt_len < 1 || decode_steps < 1 || repeats < 1) {
    return InvalidArgument("--prompt-len, --decode-steps and --repeats must be >= 1");
  }
  ENGRAM_ASSIGN_OR_RETURN(ModelFiles probe, OpenModel(model));
  if (probe.tokenizer_path.empty()) {
    return FailedPrecondition(
        "{} has no tokenizer.json: the workload tokenizes real text "
        "(pack the model with --tokenizer)",
        model);
  }
  ENGRAM_ASSIGN_OR_RETURN(Tokenizer tok, Tokenizer::Load(probe.tokenizer_path));
  ENGRAM_ASSIGN_OR_RETURN(std::string text, ReadCorpus(corpus));
  Workload w;
  ENGRAM_ASSIGN_OR_RETURN(w.stream, tok.Encode(text, false));
  w.prompt_len = static_cast<int>(prompt_len);
  w.decode_steps = static_cast<int>(decode_steps);
  if (w.stream.size() < static_cast<size_t>(2 * (prompt_len + decode_steps))) {
    return InvalidArgument("--corpus {} has {} tokens; too few for the workload", corpus,
                           w.stream.size());
  }
  uint64_t table_bytes = 0;
  for (int l : probe.config.engram->layer_ids) {
    const auto* info = probe.store.Info(EngramTableName(l));
    if (info) table_bytes += info->nbytes;
  }
  struct Mode {
    const char* name;
    TableOptions tables;
  };
  std::vector<Mode> modes(4);
  modes[0].name = "resident";
  modes[1].name = "dram";
  modes[1].tables.tier = "dram";
  modes[2].name = "nvme";
  modes[2].tables.tier = "nvme";
  modes[2].tables.cache_bytes = static_cast<uint64_t>(cache_fraction * table_bytes);
  modes[3].name = "sync";
  modes[3].tables.tier = "dram";
  modes[3].tables.prefetch = false;
  nlohmann::json j;
  j["model"] = model;
  j["corpus"] = corpus;
  j["corpus_tokens"] = w.stream.size();
  j["table_bytes"] = table_bytes;
  // All four engines stay alive and the runs interleave (mode after mode, --repeats rounds),
  // so machine noise hits every mode alike; each figure is the median of its rounds.
  std::vector<std::unique_ptr<Engine>> engines;
  for (const Mode& m : modes) {
    ENGRAM_ASSIGN_OR_RETURN(ModelFiles files, OpenModel(model));
    EngineOptions opt;
    opt.backend.threads = static_cast<int>(threads);
    opt.max_seqs = 64;
    for (long long b : batches) opt.max_seqs = std::max(opt.max_seqs, static_cast<int>(b));
    opt.kv_tokens = static_cast<int64_t>(opt.max_seqs) * (prompt_len + decode_steps + 16);
    opt.tables = m.tables;
    ENGRAM_ASSIGN_OR_RETURN(auto engine, Engine::Create(std::move(files), opt));
    engines.push_back(std::move(engine));
  }
  std::map<std::string, std::map<long long, double>> tok_s;
  for (long long b : batches) {
    w.batch = static_cast<int>(b);
    std::vector<std::vector<double>> runs(modes.size());
    for (long long r = 0; r <= repeats; ++r) {
      for (size_t i = 0; i < modes.size(); ++i) {
        ENGRAM_ASSIGN_OR_RETURN(double tps, Run(*engines[i], w));
        if (r > 0) runs[i].push_back(tps);  // round 0 warms caches and scratch
      }
    }
    for (size_t i = 0; i < modes.size(); ++i) {
      std::sort(runs[i].begin(), runs[i].end());
      tok_s[modes[i].name][b] = runs[i][runs[i].size() / 2];
    }
  }
  for (size_t i = 0; i < modes.size(); ++i) {
    const OverlapStats o = engines[i]->overlap_stats();
    const TierStats ts = engines[i]->tier_stats();
    nlohmann::json& mj = j["modes"][modes[i].name];
    mj["estimated_loss_from_stall"] = o.estimated_loss();
    if (modes[i].tables.tier == "nvme") {
      const double total = static_cast<double>(ts.cache_hits + ts.cache_misses);
      mj["cache_hit_rate"] = total > 0 ? ts.cache_hits / total : 0.0;
      mj["cache_bytes"] = modes[i].tables.cache_bytes;
    }
  }
  for (const Mode& m : modes) {
    double sum = 0, sum_res = 0;
    for (long long b : batches) {
      const double t = tok_s[m.name][b], r = tok_s["resident"][b];
      j["modes"][m.name]["batch"][std::to_string(b)] = {{"tok_s", t}, {"loss", 1.0 - t / r}};
      sum += t;
      sum_res += r;
    }
    j["modes"][m.name]["tok_s"] = sum / static_cast<double>(batches.size());
    if (std::string(m.name) != "resident") j["modes"][m.name]["loss"] = 1.0 - sum / sum_res;
  }
  if (args.Flag("json")) {
    std::printf("%s\n", j.dump(2).c_str());
    return Status::Ok();
  }
  std::printf("model %s, corpus %s (%zu tokens), tables %.2f GB, prompt %lld + %lld decode\n",
              model.c_str(), corpus.c_str(), w.stream.size(), table_bytes / 1e9, prompt_len,
              decode_steps);
  std::printf("%-10s", "mode");
  for (long long b : batches)
    std::printf(" %12s %8s", ("batch " + std::to_string(b)).c_str(), "loss");
  std::printf("\n");
  for (const Mode& m : modes) {
    std::printf("%-10s", m.name);
    for (long long b : batches) {
      const double t = tok_s[m.name][b];
      std::printf(" %8.1f t/s %7.2f%%", t, 100 * (1 - t / tok_s["resident"][b]));
    }
    std::printf("\n");
  }
  if (j["modes"]["nvme"].contains("cache_hit_rate")) {
    std::printf("nvme row cache %.1f MB (%.0f%% of the tables): hit rate %.1f%%\n",
                modes[2].tables.cache_bytes / 1e6, 100 * cache_fraction,
                100 * j["modes"]["nvme"]["cache_hit_rate"].get<double>());
  }
  return Status::Ok();
}

}  // namespace

int RunBenchOffload(int argc, char** argv) {
  auto args = Args::Parse(argc, argv, 3,
                          {"model", "corpus", "batches", "prompt-len", "decode-steps",
                           "cache-fraction", "threads", "repeats"},
                          {"help", "json"});
  if (!args.ok() || args->Flag("help")) {
    std::fprintf(stderr,
                 "usage: engram bench offload --model DIR [--corpus PATH] [--batches 16,64] "
                 "[--prompt-len 128] [--decode-steps 32] [--cache-fraction 0.1] [--threads N] "
                 "[--repeats 3] [--json]\n");
    if (!args.ok()) return Fail("bench offload", args.status()) + 1;
    return 0;
  }
  Status st = BenchOffload(*args);
  return st.ok() ? 0 : Fail("bench offload", st);
}

}  // namespace engram::cli
