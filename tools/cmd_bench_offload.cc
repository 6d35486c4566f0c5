// engram bench offload: one workload over real text, in one run, with the Engram tables in
// different places (--modes): backbone (the same model with Engram removed), resident (held
// whole by the backend: the fastest tier), dram (host tier, prefetch, rows copied through
// pinned staging), zero_copy (host tier, prefetch, the device reads the pinned tables in
// place), hot (dram + a device hot-row cache of --hot-fraction of the tables, or --hot-bytes),
// nvme (NVMe tier via io_uring + O_DIRECT, DRAM row cache = --cache-fraction of the tables, or
// --cache-bytes) and sync (host tier, rows read when the layer needs them). Throughput loss =
// 1 - tok/s / resident tok/s (and 1 - tok/s / backbone tok/s when backbone runs).
//
// --compare MODEL2 runs every mode for a second model too (e.g. FP8 tables against BF16 ones),
// in the same run and interleaved with the first model's, so that machine noise hits both
// alike; modes are then named "<label>/<mode>" and each model's losses are against its own
// resident (and backbone) mode. Both models read the same token stream (tokenized once, with
// the first model's tokenizer), so their vocabularies must agree. --cache-bytes / --hot-bytes
// give both models caches of equal bytes (a smaller row fits more rows).
//
// Per mode it reports what the tables cost in traffic: rows and bytes moved from the table
// tier per token processed (warm-up rounds included; 0 where the tables are resident), and for
// nvme the row cache's hit rate and the NVMe reads per token.
//
// Workloads: `fixed` (B sequences prefill --prompt-len tokens, then decode --decode-steps, per
// batch size of --batches) and `paper` (--seqs sequences with prompt lengths uniform in
// [--prompt-min, --prompt-max], run through the serving scheduler's policy: continuous
// batching, at most --max-seqs alive, steps of at most --step-tokens tokens of decodes and
// prompt chunks, each sequence decoding --decode-steps tokens before it ends). Decode feeds
// each sequence the corpus's next tokens (teacher forcing), so the Engram rows follow real
// n-gram traffic.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "common/dtype.h"
#include "common/row_format.h"
#include "engine_args.h"
#include "model/model_files.h"
#include "model/weights.h"
#include "runtime/scheduler.h"
#include "text/tokenizer.h"

namespace engram::cli {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr const char* kUsage =
    "usage: engram bench offload --model DIR|synth:PRESET[?...&tokenizer=PATH] [options]\n"
    "  --compare DIR|SPEC     a second model, run in the same run (every mode, interleaved):\n"
    "                         modes become LABEL/MODE (LABEL: the synth preset or the\n"
    "                         directory's name; a and b when they agree); same vocab_size\n"
    "  --corpus PATH[,PATH]   text to tokenize: files, or directories (every file under them)\n"
    "                         [/usr/share/common-licenses]\n"
    "  --modes LIST           comma-separated, run in this order, among: backbone (Engram\n"
    "                         removed), resident, dram (transfer copy), zero_copy, hot (dram +\n"
    "                         device hot-row cache), nvme, sync (dram, prefetch off),\n"
    "                         nvme_lru / hot_lru (their caches with plain LRU, not TinyLFU),\n"
    "                         nvme_nomerge (one NVMe read per missed row)\n"
    "                         [resident,dram,nvme,sync]; loss is against resident, and against\n"
    "                         backbone too when it runs\n"
    "  --backend cpu|cuda     [cpu]    --device N  CUDA device [0]    --threads N  CPU [0: all]\n"
    "  --weights auto|bf16|int8 [auto] the backbone's Linear weight format (docs/architecture.md)\n"
    "  --workload fixed|paper [fixed]\n"
    "    fixed: --batches 16,64  --prompt-len 128  --decode-steps 32\n"
    "    paper: --seqs 512  --prompt-min 100  --prompt-max 1024  --seed 0  --decode-steps 32\n"
    "           [--decode-max N: decode lengths uniform in [decode-steps, N]]\n"
    "           --max-seqs 64 (sequences alive)  --step-tokens 8192 (tokens per step)\n"
    "  --cache-fraction 0.1   nvme: DRAM row cache, as a fraction of the tables\n"
    "  --cache-bytes B        nvme: DRAM row cache of B bytes (overrides --cache-fraction)\n"
    "  --hot-fraction 0.05    hot: device hot-row cache, as a fraction of the tables\n"
    "  --hot-bytes B          hot: device hot-row cache of B bytes (overrides --hot-fraction)\n"
    "  --cuda-graphs on|off   decode steps as CUDA graphs (resident/backbone modes) [off]\n"
    "  --repeats 3            timed rounds per mode (the median is reported)\n"
    "  --warmup 1             untimed rounds per mode first (caches, scratch)\n"
    "  --sequential           create, run and destroy each mode's engine in turn (peak memory\n"
    "                         of one engine); default: all engines alive, rounds interleaved\n"
    "  --verbose              a line per round on stderr    --json  machine-readable output\n";

constexpr const char* kModeNames[] = {"backbone", "resident",    "dram", "zero_copy",
                                      "nvme",     "sync",        "hot",  "nvme_lru",
                                      "hot_lru",  "nvme_nomerge"};

// Every regular file under each comma-separated path (a directory's in name order, or the file
// itself), concatenated.
Result<std::string> ReadCorpus(const std::string& paths) {
  std::error_code ec;
  std::vector<fs::path> files;
  std::stringstream list(paths);
  for (std::string path; std::getline(list, path, ',');) {
    std::vector<fs::path> found;
    if (fs::is_directory(path, ec)) {
      for (const auto& e : fs::recursive_directory_iterator(path, ec)) {
        if (e.is_regular_file(ec)) found.push_back(e.path());
      }
      std::sort(found.begin(), found.end());
    } else if (fs::is_regular_file(path, ec)) {
      found.push_back(path);
    }
    if (found.empty()) return NotFound("--corpus {}: no files to read", path);
    files.insert(files.end(), found.begin(), found.end());
  }
  if (files.empty()) return NotFound("--corpus \"{}\": no files to read", paths);
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

struct Options {
  std::string model;
  std::string compare;  // a second model; empty: none
  std::string corpus;
  std::string backend = "cpu";
  std::string weights = "auto";  // BackendOptions::weights
  int device = 0;
  int threads = 0;
  std::vector<std::string> modes;
  bool paper = false;
  // fixed
  std::vector<long long> batches = {16, 64};
  int prompt_len = 128;
  // paper
  int seqs = 512;
  int prompt_min = 100;
  int prompt_max = 1024;
  uint64_t seed = 0;
  int max_seqs = 64;
  int step_tokens = 8192;
  int decode_max =
      0;  // decode lengths uniform in [decode_steps, decode_max] (default decode_steps)
  // both
  int decode_steps = 32;
  double cache_fraction = 0.10;
  double hot_fraction = 0.05;
  std::optional<uint64_t> cache_bytes;  // --cache-bytes: overrides cache_fraction
  std::optional<uint64_t> hot_bytes;    // --hot-bytes: overrides hot_fraction
  int repeats = 3;
  int warmup = 1;
  bool sequential = false;
  bool cuda_graphs = false;  // decode steps as CUDA graphs (resident and backbone modes)
  bool verbose = false;
  bool json = false;
};

Result<int> IntIn(const Args& args, const std::string& key, long long fallback, long long lo,
                  long long hi) {
  ENGRAM_ASSIGN_OR_RETURN(long long v, args.GetInt(key, fallback));
  if (v < lo || v > hi) return InvalidArgument("--{} {} is out of range [{}, {}]", key, v, lo, hi);
  return static_cast<int>(v);
}

// Options only; nothing is opened. Every error here is a usage error.
Result<Options> ParseOptions(const Args& args) {
  Options o;
  ENGRAM_ASSIGN_OR_RETURN(o.model, args.Require("model"));
  o.compare = args.Get("compare").value_or("");
  if (args.Has("compare") && o.compare.empty()) return InvalidArgument("--compare is empty");
  o.corpus = args.Get("corpus").value_or("/usr/share/common-licenses");
  o.backend = args.Get("backend").value_or("cpu");
  if (o.backend != "cpu" && o.backend != "cuda") {
    return InvalidArgument("--backend \"{}\" (expected cpu or cuda)", o.backend);
  }
  o.weights = args.Get("weights").value_or("auto");
  ENGRAM_RETURN_IF_ERROR(ValidateWeightFormat(o.weights));
  ENGRAM_ASSIGN_OR_RETURN(o.device, IntIn(args, "device", o.device, 0, 1023));
  ENGRAM_ASSIGN_OR_RETURN(o.cuda_graphs, args.GetOnOff("cuda-graphs", false));
  ENGRAM_ASSIGN_OR_RETURN(o.threads, IntIn(args, "threads", o.threads, 0, 4096));
  std::vector<std::string> modes = {"resident", "dram", "nvme", "sync"};
  if (args.Has("modes")) {
    ENGRAM_ASSIGN_OR_RETURN(modes, args.GetList("modes"));
    if (modes == std::vector<std::string>{""}) modes.clear();  // "--modes is empty" below
  }
  for (const std::string& m : modes) {
    if (std::find(std::begin(kModeNames), std::end(kModeNames), m) == std::end(kModeNames)) {
      return InvalidArgument(
          "--modes: unknown mode \"{}\" (expected a comma-separated list of: {})", m,
          fmt::join(kModeNames, ", "));
    }
    if (std::find(o.modes.begin(), o.modes.end(), m) != o.modes.end()) {
      return InvalidArgument("--modes: \"{}\" appears twice", m);
    }
    o.modes.push_back(m);
  }
  if (o.modes.empty()) {
    return InvalidArgument("--modes is empty (expected a comma-separated list of: {})",
                           fmt::join(kModeNames, ", "));
  }
  const std::string workload = args.Get("workload").value_or("fixed");
  if (workload != "fixed" && workload != "paper") {
    return InvalidArgument("--workload \"{}\" (expected fixed or paper)", workload);
  }
  o.paper = workload == "paper";
  for (const char* k : {"batches", "prompt-len"}) {
    if (o.paper && args.Has(k)) return InvalidArgument("--{} applies to --workload fixed", k);
  }
  for (const char* k :
       {"seqs", "prompt-min", "prompt-max", "seed", "max-seqs", "step-tokens", "decode-max"}) {
    if (!o.paper && args.Has(k)) return InvalidArgument("--{} applies to --workload paper", k);
  }
  // Each option's default is its initial value in Options.
  if (args.Has("batches")) {
    ENGRAM_ASSIGN_OR_RETURN(o.batches, args.GetIntList("batches"));
  }
  for (long long b : o.batches) {
    if (b < 1 || b > 4096) return InvalidArgument("--batches: {} is out of range [1, 4096]", b);
  }
  if (o.batches.empty()) return InvalidArgument("--batches is empty");
  ENGRAM_ASSIGN_OR_RETURN(o.prompt_len, IntIn(args, "prompt-len", o.prompt_len, 1, 1 << 20));
  ENGRAM_ASSIGN_OR_RETURN(o.seqs, IntIn(args, "seqs", o.seqs, 1, 1 << 20));
  ENGRAM_ASSIGN_OR_RETURN(o.prompt_min, IntIn(args, "prompt-min", o.prompt_min, 1, 1 << 20));
  ENGRAM_ASSIGN_OR_RETURN(o.prompt_max, IntIn(args, "prompt-max", o.prompt_max, 1, 1 << 20));
  if (o.prompt_min > o.prompt_max) {
    return InvalidArgument("--prompt-min {} is above --prompt-max {}", o.prompt_min, o.prompt_max);
  }
  ENGRAM_ASSIGN_OR_RETURN(long long seed, args.GetInt("seed", static_cast<long long>(o.seed)));
  o.seed = static_cast<uint64_t>(seed);
  ENGRAM_ASSIGN_OR_RETURN(o.max_seqs, IntIn(args, "max-seqs", o.max_seqs, 1, 4096));
  ENGRAM_ASSIGN_OR_RETURN(o.step_tokens, IntIn(args, "step-tokens", o.step_tokens, 1, 1 << 20));
  ENGRAM_ASSIGN_OR_RETURN(o.decode_steps, IntIn(args, "decode-steps", o.decode_steps, 1, 1 << 20));
  ENGRAM_ASSIGN_OR_RETURN(o.decode_max, IntIn(args, "decode-max", o.decode_steps, 1, 1 << 20));
  if (o.decode_max < o.decode_steps) {
    return InvalidArgument("--decode-max {} is below --decode-steps {}", o.decode_max,
                           o.decode_steps);
  }
  ENGRAM_ASSIGN_OR_RETURN(o.cache_fraction, args.GetDouble("cache-fraction", o.cache_fraction));
  ENGRAM_ASSIGN_OR_RETURN(o.hot_fraction, args.GetDouble("hot-fraction", o.hot_fraction));
  if (!(o.cache_fraction >= 0 && o.cache_fraction <= 1)) {
    return InvalidArgument("--cache-fraction {} is out of range [0, 1]", o.cache_fraction);
  }
  if (!(o.hot_fraction > 0 && o.hot_fraction <= 1)) {
    return InvalidArgument("--hot-fraction {} is out of range (0, 1]", o.hot_fraction);
  }
  for (const char* k : {"cache-bytes", "hot-bytes"}) {
    if (!args.Has(k)) continue;
    ENGRAM_ASSIGN_OR_RETURN(long long b, args.GetInt(k, 0));
    const long long lo = std::string(k) == "hot-bytes" ? 1 : 0;
    if (b < lo) return InvalidArgument("--{} {} is below {}", k, b, lo);
    (std::string(k) == "hot-bytes" ? o.hot_bytes : o.cache_bytes) = static_cast<uint64_t>(b);
  }
  ENGRAM_ASSIGN_OR_RETURN(o.repeats, IntIn(args, "repeats", o.repeats, 1, 1000));
  ENGRAM_ASSIGN_OR_RETURN(o.warmup, IntIn(args, "warmup", o.warmup, 0, 1000));
  o.sequential = args.Flag("sequential");
  o.verbose = args.Flag("verbose");
  o.json = args.Flag("json");
  return o;
}

// What one pass of a workload did.
struct RunStats {
  double seconds = 0;
  int64_t prefill_tokens = 0;
  int64_t decode_tokens = 0;
  int64_t steps = 0;
  double tok_s() const { return static_cast<double>(prefill_tokens + decode_tokens) / seconds; }
  double decode_tok_s() const { return static_cast<double>(decode_tokens) / seconds; }
};

// The fixed workload: prefill `batch` prompts (consecutive corpus slices) in one step, then
// decode step by step, every sequence at once.
Result<RunStats> RunFixed(Engine& e, const std::vector<int32_t>& stream, int batch, int prompt_len,
                          int decode_steps) {
  std::vector<SeqId> seqs;
  std::vector<StepChunk> chunks;
  const size_t span = static_cast<size_t>(prompt_len + decode_steps);
  RunStats rs;
  const auto t0 = Clock::now();
  Status st;
  for (int b = 0; b < batch && st.ok(); ++b) {
    auto s = e.AddSequence();
    if (s.ok()) {
      seqs.push_back(*s);
    } else {
      st = s.status();
    }
  }
  auto start_of = [&](int b) { return (static_cast<size_t>(b) * span) % (stream.size() - span); };
  for (size_t b = 0; b < seqs.size(); ++b) {
    chunks.push_back(
        {seqs[b], std::span<const int32_t>(stream.data() + start_of(static_cast<int>(b)),
                                           static_cast<size_t>(prompt_len))});
  }
  if (st.ok()) {
    if (auto r = e.Step(chunks, false); !r.ok()) st = r.status();
    ++rs.steps;
  }
  for (int step = 0; step < decode_steps && st.ok(); ++step) {
    for (size_t b = 0; b < seqs.size(); ++b) {
      chunks[b].tokens = std::span<const int32_t>(
          stream.data() + start_of(static_cast<int>(b)) + static_cast<size_t>(prompt_len + step),
          1);
    }
    if (auto r = e.Step(chunks, false); !r.ok()) st = r.status();
    ++rs.steps;
  }
  rs.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  for (SeqId s : seqs) e.RemoveSequence(s);
  ENGRAM_RETURN_IF_ERROR(st);
  rs.prefill_tokens = static_cast<int64_t>(batch) * prompt_len;
  rs.decode_tokens = static_cast<int64_t>(batch) * decode_steps;
  return rs;
}

// The paper workload's sequences: prompt lengths uniform in [prompt_min, prompt_max] and decode
// lengths in [decode_steps, decode_max] (mt19937_64 seeded with --seed; values reduced by
// modulo, so the lengths are the same with any standard library), each a consecutive slice of
// the corpus (prompt + decode tokens), wrapping around.
struct PaperSeq {
  size_t start = 0;
  int prompt_len = 0;
  int decode_len = 0;
};

std::vector<PaperSeq> PaperSequences(const Options& o, size_t corpus_tokens) {
  std::mt19937_64 rng(o.seed);
  auto uniform = [&rng](int lo, int hi) {
    return lo + static_cast<int>(rng() % (static_cast<uint64_t>(hi - lo) + 1));
  };
  std::vector<PaperSeq> seqs(static_cast<size_t>(o.seqs));
  size_t cursor = 0;
  for (PaperSeq& s : seqs) {
    s.prompt_len = uniform(o.prompt_min, o.prompt_max);
    // Drawn only when they vary, so fixed decode lengths leave the prompt lengths as they were.
    s.decode_len =
        o.decode_max > o.decode_steps ? uniform(o.decode_steps, o.decode_max) : o.decode_steps;
    const size_t span = static_cast<size_t>(s.prompt_len + s.decode_len);
    if (cursor + span > corpus_tokens) cursor = 0;
    s.start = cursor;
    cursor += span;
  }
  return seqs;
}

// The paper workload through the serving scheduler's policy (runtime/scheduler.h): every
// sequence queued at the start; each step admits while a slot is free, runs one decode token
// per decoding sequence, then fills the rest of --step-tokens with prompt chunks (whole prompts
// or pieces), oldest first; a sequence ends after its decode tokens.
Result<RunStats> RunPaper(Engine& e, const std::vector<int32_t>& stream,
                          const std::vector<PaperSeq>& seqs, const Options& o) {
  SchedulerLimits lim;
  lim.max_running_seqs = o.max_seqs;
  lim.max_batch_tokens = o.step_tokens;
  lim.prefill_chunk_tokens = o.step_tokens;
  lim.max_waiting = static_cast<int>(seqs.size());
  lim.kv_blocks = e.total_kv_blocks();
  lim.kv_block_size = e.kv_block_size();
  Scheduler sched(lim);
  for (size_t i = 0; i < seqs.size(); ++i) {
    SchedItem it;
    it.key = i;
    it.prompt_len = seqs[i].prompt_len;
    it.max_tokens = seqs[i].decode_len;
    ENGRAM_RETURN_IF_ERROR(sched.Enqueue(it));
  }
  std::vector<SeqId> id(seqs.size(), -1);
  std::vector<int> decoded(seqs.size(), 0);
  std::vector<StepChunk> chunks;
  RunStats rs;
  Status st;
  const auto t0 = Clock::now();
  while (st.ok()) {
    for (uint64_t k : sched.Admit()) {
      auto s = e.AddSequence();
      if (!s.ok()) {
        st = s.status();
        break;
      }
      id[k] = *s;
    }
    if (!st.ok()) break;
    const std::vector<PlannedChunk> plan = sched.Plan();
    if (plan.empty()) break;
    chunks.clear();
    for (const PlannedChunk& p : plan) {
      const PaperSeq& s = seqs[p.key];
      const int32_t* base = stream.data() + s.start;
      if (p.prompt_begin >= 0) {
        chunks.push_back(
            {id[p.key],
             std::span<const int32_t>(base + p.prompt_begin, static_cast<size_t>(p.num_tokens)),
             p.last_prompt_chunk});
        rs.prefill_tokens += p.num_tokens;
      } else {
        chunks.push_back(
            {id[p.key], std::span<const int32_t>(base + s.prompt_len + decoded[p.key], 1), true});
        rs.decode_tokens += 1;
      }
    }
    if (auto r = e.Step(chunks, false); !r.ok()) {
      st = r.status();
      break;
    }
    ++rs.steps;
    sched.Commit(plan);
    for (const PlannedChunk& p : plan) {
      if (p.prompt_begin < 0 && ++decoded[p.key] == seqs[p.key].decode_len) {
        e.RemoveSequence(id[p.key]);
        sched.Remove(p.key);
        id[p.key] = -1;
      }
    }
  }
  rs.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  for (SeqId s : id) {
    if (s >= 0) e.RemoveSequence(s);
  }
  ENGRAM_RETURN_IF_ERROR(st);
  return rs;
}

// One model under test (--model, and --compare's), with what its tables hold.
struct BenchModel {
  std::string spec;
  std::string label;  // "<label>/<mode>" names its modes under --compare
  ModelFiles files;
  uint64_t table_bytes = 0;  // the Engram tables, their scales included
  bool tables_in_files = true;
  RowFormat row;     // a table row as the tier stores and moves it
  int64_t rows = 0;  // over all Engram layers
};

// The synth preset's name, or the directory's.
std::string ShortName(const std::string& spec) {
  if (spec.starts_with("synth:")) {
    const std::string rest = spec.substr(6);
    return rest.substr(0, rest.find('?'));
  }
  fs::path p(spec);
  if (p.filename().empty()) p = p.parent_path();
  return p.filename().string();
}

Result<BenchModel> OpenBenchModel(const std::string& spec) {
  BenchModel m;
  m.spec = spec;
  m.label = ShortName(spec);
  ENGRAM_ASSIGN_OR_RETURN(m.files, OpenModel(spec));
  if (!m.files.config.engram) return FailedPrecondition("{} has no Engram layers", spec);
  const EngramConfig& ec = *m.files.config.engram;
  m.row.dim = ec.head_dim();
  for (int l : ec.layer_ids) {
    const TensorInfo* info = m.files.store.Info(EngramTableName(ec, l));
    const TensorInfo* scale = m.files.store.Info(EngramScaleName(ec, l));
    if (info) {
      m.table_bytes += info->nbytes;
      m.row.dtype = info->dtype;
      if (!info->shape.empty()) m.rows += info->shape[0];
    }
    if (scale) m.table_bytes += scale->nbytes;
    if (!info || info->file.empty() || (scale && scale->file.empty())) m.tables_in_files = false;
  }
  return m;
}

struct Mode {
  std::string name;       // as reported: "<label>/<kind>" under --compare
  std::string kind;       // the --modes name
  size_t model = 0;       // index of its BenchModel
  bool backbone = false;  // Engram removed from the model
  TableOptions tables;
};

// What a mode's engine reported after its runs (warm-up rounds included).
struct ModeStats {
  double setup_s = 0;
  double estimated_loss = 0;
  double hot_hit_rate = 0;  // over all Engram layers
  double cache_hit_rate = 0;
  uint64_t cache_misses = 0, io_reads = 0;
  bool has_cache = false;
  uint64_t rows_moved = 0, bytes_moved = 0;  // from the table tier (hot hits excluded)
  int64_t tokens = 0;                        // prefill + decode, every round
  double per_token(uint64_t x) const {
    return tokens > 0 ? static_cast<double>(x) / static_cast<double>(tokens) : 0.0;
  }
};

ModeStats Collect(const Engine& e, const Mode& m, double setup_s, int64_t tokens) {
  ModeStats s;
  s.setup_s = setup_s;
  s.tokens = tokens;
  const OverlapStats o = e.overlap_stats();
  s.estimated_loss = o.estimated_loss();
  LayerOverlap all;
  for (const LayerOverlap& l : o.layers) {
    all.hot_hits += l.hot_hits;
    all.unique_rows += l.unique_rows;
    s.bytes_moved += l.bytes_moved;
  }
  s.hot_hit_rate = all.hot_hit_rate();
  s.rows_moved = all.unique_rows - all.hot_hits;
  if (m.tables.tier == "nvme") {
    const TierStats ts = e.tier_stats();
    s.cache_hit_rate = ts.cache_hit_rate();
    s.cache_misses = ts.cache_misses;
    s.io_reads = ts.io_reads;
    s.has_cache = true;
  }
  return s;
}

template <typename F>
double Median(const std::vector<RunStats>& runs, F value) {
  std::vector<double> v;
  for (const RunStats& r : runs) v.push_back(value(r));
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

Status BenchOffload(const Options& o) {
  std::vector<BenchModel> models;
  ENGRAM_ASSIGN_OR_RETURN(BenchModel first, OpenBenchModel(o.model));
  models.push_back(std::move(first));
  const bool compare = !o.compare.empty();
  if (compare) {
    ENGRAM_ASSIGN_OR_RETURN(BenchModel second, OpenBenchModel(o.compare));
    const int64_t va = models[0].files.config.vocab_size, vb = second.files.config.vocab_size;
    if (va != vb) {
      return InvalidArgument(
          "--model {} has vocab_size {} and --compare {} has vocab_size {}: both run the same "
          "token stream (tokenized with the first model's tokenizer), so they need the same "
          "vocabulary",
          o.model, va, o.compare, vb);
    }
    if (second.label == models[0].label) {
      models[0].label = "a";
      second.label = "b";
    }
    models.push_back(std::move(second));
  }
  const ModelFiles& base = models[0].files;
  if (base.tokenizer_path.empty()) {
    return FailedPrecondition(
        "{} has no tokenizer.json: the workload tokenizes real text (pack the model with "
        "--tokenizer, or use synth:PRESET?tokenizer=PATH)",
        o.model);
  }
  ENGRAM_ASSIGN_OR_RETURN(Tokenizer tok, Tokenizer::Load(base.tokenizer_path));
  ENGRAM_ASSIGN_OR_RETURN(std::string text, ReadCorpus(o.corpus));
  ENGRAM_ASSIGN_OR_RETURN(std::vector<int32_t> stream, tok.Encode(text, false));
  const size_t longest =
      static_cast<size_t>((o.paper ? o.prompt_max + o.decode_max : o.prompt_len + o.decode_steps));
  if (stream.size() < 2 * longest) {
    return InvalidArgument("--corpus {} has {} tokens; the workload needs at least {}", o.corpus,
                           stream.size(), 2 * longest);
  }

  // Mode after mode, each for every model in turn (a/dram, b/dram, a/nvme, ...).
  std::vector<Mode> modes;
  for (const std::string& kind : o.modes) {
    for (size_t mi = 0; mi < models.size(); ++mi) {
      const BenchModel& bm = models[mi];
      Mode m;
      m.kind = kind;
      m.model = mi;
      m.name = compare ? bm.label + "/" + kind : kind;
      if (kind == "backbone") {
        m.backbone = true;
      } else if (kind == "dram" || kind == "zero_copy" || kind == "sync" || kind == "hot" ||
                 kind == "hot_lru") {
        m.tables.tier = "dram";
        m.tables.transfer = kind == "zero_copy" ? "zero_copy" : "copy";
        m.tables.prefetch = kind != "sync";
        if (kind == "hot" || kind == "hot_lru") {
          m.tables.hot_cache_bytes =
              o.hot_bytes.value_or(static_cast<uint64_t>(o.hot_fraction * bm.table_bytes));
        }
        if (kind == "hot_lru") m.tables.cache_policy = "lru";
      } else if (kind == "nvme" || kind == "nvme_lru" || kind == "nvme_nomerge") {
        if (!bm.tables_in_files) {
          return FailedPrecondition(
              "mode nvme reads the tables from the model's files, and {} holds them in memory; "
              "pack it first (engram pack synth --preset P --tokenizer T --out DIR) or leave "
              "nvme out of --modes",
              bm.spec);
        }
        m.tables.tier = "nvme";
        m.tables.cache_bytes =
            o.cache_bytes.value_or(static_cast<uint64_t>(o.cache_fraction * bm.table_bytes));
        if (kind == "nvme_lru") m.tables.cache_policy = "lru";
        if (kind == "nvme_nomerge") m.tables.nvme_merge_bytes = 0;
      }
      modes.push_back(std::move(m));
    }
  }

  EngineOptions eo;
  eo.backend.kind = o.backend;
  eo.backend.device_index = o.device;
  eo.backend.cuda_graphs = o.cuda_graphs;
  eo.backend.threads = o.threads;
  eo.backend.weights = o.weights;
  std::vector<PaperSeq> paper_seqs;
  if (o.paper) {
    paper_seqs = PaperSequences(o, stream.size());
    eo.max_seqs = o.max_seqs;
    // Every admitted sequence's whole span fits at once (block-rounded): admission never waits
    // for KV, as a server sized for this load would not.
    const int64_t per_seq =
        (o.prompt_max + o.decode_max + eo.block_size - 1) / eo.block_size * eo.block_size;
    eo.kv_tokens = per_seq * o.max_seqs;
  } else {
    eo.max_seqs = 64;
    for (long long b : o.batches) eo.max_seqs = std::max(eo.max_seqs, static_cast<int>(b));
    eo.kv_tokens = static_cast<int64_t>(eo.max_seqs) * (o.prompt_len + o.decode_steps + 16);
  }
  auto create = [&](const Mode& m) -> Result<std::unique_ptr<Engine>> {
    // Shares the tensors (mapped or in memory) with models[m.model].
    ModelFiles files = models[m.model].files;
    if (m.backbone) files.config.engram.reset();
    EngineOptions opt = eo;
    opt.tables = m.tables;
    Result<std::unique_ptr<Engine>> e = Engine::Create(std::move(files), opt);
    if (!e.ok()) return e.status().WithContext("mode " + m.name);
    return std::move(*e);
  };

  // Cases: one per batch size (fixed) or the one paper workload.
  std::vector<std::string> cases;
  if (o.paper) {
    cases = {"paper"};
  } else {
    for (long long b : o.batches) cases.push_back(std::to_string(b));
  }
  RunStats paper_workload;  // the paper workload's token and step counts (the same every pass)
  auto run = [&](Engine& e, size_t c) -> Result<RunStats> {
    ENGRAM_ASSIGN_OR_RETURN(RunStats rs, o.paper
                                             ? RunPaper(e, stream, paper_seqs, o)
                                             : RunFixed(e, stream, static_cast<int>(o.batches[c]),
                                                        o.prompt_len, o.decode_steps));
    if (o.paper) paper_workload = rs;
    return rs;
  };
  const int rounds = o.warmup + o.repeats;
  // runs[mode][case]: the timed rounds.
  std::vector<std::vector<std::vector<RunStats>>> runs(
      modes.size(), std::vector<std::vector<RunStats>>(cases.size()));
  std::vector<ModeStats> stats(modes.size());
  std::vector<int64_t> tokens(modes.size(), 0);  // every round's, warm-up included
  auto note = [&](size_t i, size_t c, int r, const RunStats& rs) {
    if (o.verbose) {
      std::fprintf(stderr, "bench offload: %s %s%s round %d%s: %.1f tok/s (%.2f s)\n",
                   modes[i].name.c_str(), o.paper ? "" : "batch ", cases[c].c_str(), r,
                   r < o.warmup ? " (warm-up)" : "", rs.tok_s(), rs.seconds);
    }
    tokens[i] += rs.prefill_tokens + rs.decode_tokens;
    if (r >= o.warmup) runs[i][c].push_back(rs);
  };
  if (o.sequential) {
    // One engine at a time: peak memory is one mode's (e.g. a 40 GB dram tier never coexists
    // with an HBM-resident copy). Rounds run back to back within a mode.
    for (size_t i = 0; i < modes.size(); ++i) {
      const auto t0 = Clock::now();
      ENGRAM_ASSIGN_OR_RETURN(std::unique_ptr<Engine> e, create(modes[i]));
      const double setup = std::chrono::duration<double>(Clock::now() - t0).count();
      std::fprintf(stderr, "bench offload: mode %s ready in %.1f s\n", modes[i].name.c_str(),
                   setup);
      for (size_t c = 0; c < cases.size(); ++c) {
        for (int r = 0; r < rounds; ++r) {
          ENGRAM_ASSIGN_OR_RETURN(RunStats rs, run(*e, c));
          note(i, c, r, rs);
        }
      }
      stats[i] = Collect(*e, modes[i], setup, tokens[i]);
    }
  } else {
    // All engines stay alive and the runs interleave (mode after mode, round after round), so
    // machine noise hits every mode alike.
    std::vector<std::unique_ptr<Engine>> engines;
    std::vector<double> setup;
    for (const Mode& m : modes) {
      const auto t0 = Clock::now();
      ENGRAM_ASSIGN_OR_RETURN(auto e, create(m));
      engines.push_back(std::move(e));
      setup.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    }
    for (size_t c = 0; c < cases.size(); ++c) {
      for (int r = 0; r < rounds; ++r) {
        for (size_t i = 0; i < modes.size(); ++i) {
          ENGRAM_ASSIGN_OR_RETURN(RunStats rs, run(*engines[i], c));
          note(i, c, r, rs);
        }
      }
    }
    for (size_t i = 0; i < modes.size(); ++i) {
      stats[i] = Collect(*engines[i], modes[i], setup[i], tokens[i]);
    }
  }

  // Medians and losses. Over several batch sizes a mode's tok_s is the mean of its medians and
  // its loss 1 - sum / reference sum. A mode's references are its own model's modes.
  auto ref_of = [&](size_t i, const char* kind) -> int {
    for (size_t k = 0; k < modes.size(); ++k) {
      if (k != i && modes[k].model == modes[i].model && modes[k].kind == kind) {
        return static_cast<int>(k);
      }
    }
    return -1;
  };
  std::vector<int> resident(modes.size()), backbone(modes.size());
  for (size_t i = 0; i < modes.size(); ++i) {
    resident[i] = ref_of(i, "resident");
    backbone[i] = ref_of(i, "backbone");
  }
  const bool has_backbone = std::find(o.modes.begin(), o.modes.end(), "backbone") != o.modes.end();
  std::vector<std::vector<double>> med(modes.size(), std::vector<double>(cases.size()));
  std::vector<double> sum(modes.size(), 0.0), decode_med(modes.size(), 0.0);
  for (size_t i = 0; i < modes.size(); ++i) {
    for (size_t c = 0; c < cases.size(); ++c) {
      med[i][c] = Median(runs[i][c], [](const RunStats& r) { return r.tok_s(); });
      sum[i] += med[i][c];
    }
    decode_med[i] = Median(runs[i][0], [](const RunStats& r) { return r.decode_tok_s(); });
  }
  // Keys in insertion order: the modes as --modes named them.
  nlohmann::ordered_json j;
  j["model"] = o.model;
  if (compare) j["compare"] = o.compare;
  j["backend"] = o.backend;
  j["weights"] = o.weights;
  j["corpus"] = o.corpus;
  j["corpus_tokens"] = stream.size();
  j["table_bytes"] = models[0].table_bytes;
  j["repeats"] = o.repeats;
  j["warmup"] = o.warmup;
  j["sequential"] = o.sequential;
  j["max_seqs"] = eo.max_seqs;
  j["kv_tokens"] = eo.kv_tokens;
  nlohmann::ordered_json& models_j = j["models"];
  models_j = nlohmann::ordered_json::array();
  for (const BenchModel& bm : models) {
    models_j.push_back({{"label", bm.label},
                        {"model", bm.spec},
                        {"table_bytes", bm.table_bytes},
                        {"row_bytes", bm.row.bytes()},
                        {"table_dtype", std::string(DTypeName(bm.row.dtype))},
                        {"rows", bm.rows}});
  }
  nlohmann::ordered_json& wj = j["workload"];
  if (o.paper) {
    const RunStats& w = paper_workload;
    wj = {{"name", "paper"},
          {"seqs", o.seqs},
          {"prompt_min", o.prompt_min},
          {"prompt_max", o.prompt_max},
          {"seed", o.seed},
          {"decode_steps", o.decode_steps},
          {"decode_max", o.decode_max},
          {"max_seqs", o.max_seqs},
          {"step_tokens", o.step_tokens},
          {"prefill_tokens", w.prefill_tokens},
          {"decode_tokens", w.decode_tokens},
          {"tokens", w.prefill_tokens + w.decode_tokens},
          {"steps", w.steps}};
  } else {
    wj = {{"name", "fixed"},
          {"batches", o.batches},
          {"prompt_len", o.prompt_len},
          {"decode_steps", o.decode_steps}};
  }
  // Loss of mode i against mode `base` at case c (medians of the same run).
  auto loss = [&](size_t i, size_t c, int base) { return 1.0 - med[i][c] / med[base][c]; };
  for (size_t i = 0; i < modes.size(); ++i) {
    const Mode& m = modes[i];
    const ModeStats& s = stats[i];
    nlohmann::ordered_json& mj = j["modes"][m.name];
    if (compare) mj["model"] = models[m.model].label;
    if (!o.paper) {
      for (size_t c = 0; c < cases.size(); ++c) {
        nlohmann::ordered_json& bj = mj["batch"][cases[c]];
        bj["tok_s"] = med[i][c];
        if (resident[i] >= 0) bj["loss"] = loss(i, c, resident[i]);
        if (backbone[i] >= 0) bj["loss_vs_backbone"] = loss(i, c, backbone[i]);
      }
    }
    mj["tok_s"] = sum[i] / static_cast<double>(cases.size());
    if (o.paper) mj["decode_tok_s"] = decode_med[i];  // generated tokens only (nano-vLLM's)
    if (resident[i] >= 0) mj["loss"] = 1.0 - sum[i] / sum[resident[i]];
    if (backbone[i] >= 0) mj["loss_vs_backbone"] = 1.0 - sum[i] / sum[backbone[i]];
    mj["estimated_loss_from_stall"] = s.estimated_loss;
    mj["setup_s"] = s.setup_s;
    mj["rows_per_token"] = s.per_token(s.rows_moved);
    mj["row_bytes_per_token"] = s.per_token(s.bytes_moved);
    if (m.tables.hot_cache_bytes > 0) {
      mj["hot_cache_bytes"] = m.tables.hot_cache_bytes;
      mj["hot_hit_rate"] = s.hot_hit_rate;
    }
    if (s.has_cache) {
      mj["cache_hit_rate"] = s.cache_hit_rate;
      mj["nvme_reads_per_token"] = s.per_token(s.io_reads);
      mj["cache_bytes"] = m.tables.cache_bytes;
      mj["cache_misses"] = s.cache_misses;
      mj["io_reads"] = s.io_reads;
    }
  }
  if (o.json) {
    std::printf("%s\n", j.dump(2).c_str());
    return Status::Ok();
  }

  for (const BenchModel& bm : models) {
    std::printf("model %s%s, %s backend, tables %.2f GB: %lld rows of %zu B (%s)\n",
                bm.spec.c_str(), compare ? (" (" + bm.label + ")").c_str() : "", o.backend.c_str(),
                bm.table_bytes / 1e9, static_cast<long long>(bm.rows), bm.row.bytes(),
                std::string(DTypeName(bm.row.dtype)).c_str());
  }
  std::printf("corpus %s (%zu tokens)\n", o.corpus.c_str(), stream.size());
  if (o.paper) {
    std::printf(
        "workload paper: %d sequences, prompts %d..%d tokens, decode %s tokens (seed %llu), "
        "<= %d alive, <= %d tokens a step: %lld prefill + %lld decode tokens in %lld steps\n",
        o.seqs, o.prompt_min, o.prompt_max,
        (o.decode_max > o.decode_steps ? fmt::format("{}..{}", o.decode_steps, o.decode_max)
                                       : std::to_string(o.decode_steps))
            .c_str(),
        static_cast<unsigned long long>(o.seed), o.max_seqs, o.step_tokens,
        static_cast<long long>(wj["prefill_tokens"].get<int64_t>()),
        static_cast<long long>(wj["decode_tokens"].get<int64_t>()),
        static_cast<long long>(wj["steps"].get<int64_t>()));
  } else {
    std::printf("workload fixed: prompt %d + %d decode tokens per sequence\n", o.prompt_len,
                o.decode_steps);
  }
  std::printf("median of %d rounds after %d warm-up, modes %s\n", o.repeats, o.warmup,
              o.sequential ? "one after another (--sequential)" : "interleaved");
  auto pct = [](double x) { return fmt::format("{:.2f}%", 100 * x); };
  int width = 12;
  for (const Mode& m : modes) width = std::max(width, static_cast<int>(m.name.size()));
  std::printf("%-*s", width, "mode");
  for (const std::string& c : cases) {
    std::printf(" %14s %8s", (o.paper ? std::string("tok/s") : "batch " + c).c_str(), "loss");
    if (has_backbone) std::printf(" %11s", "vs backbone");
  }
  if (o.paper) std::printf(" %16s", "decode tok/s");
  std::printf(" %10s %9s %10s\n", "stall loss", "rows/tok", "row B/tok");
  for (size_t i = 0; i < modes.size(); ++i) {
    const ModeStats& s = stats[i];
    std::printf("%-*s", width, modes[i].name.c_str());
    for (size_t c = 0; c < cases.size(); ++c) {
      std::printf(" %10.1f t/s %8s", med[i][c],
                  resident[i] >= 0 ? pct(loss(i, c, resident[i])).c_str() : "-");
      if (has_backbone) {
        std::printf(" %11s", backbone[i] >= 0 ? pct(loss(i, c, backbone[i])).c_str() : "-");
      }
    }
    if (o.paper) std::printf(" %12.1f t/s", decode_med[i]);
    std::printf(" %10s %9.1f %10.0f\n", pct(s.estimated_loss).c_str(), s.per_token(s.rows_moved),
                s.per_token(s.bytes_moved));
  }
  for (size_t i = 0; i < modes.size(); ++i) {
    const Mode& m = modes[i];
    const ModeStats& s = stats[i];
    const double tables = static_cast<double>(models[m.model].table_bytes);
    if (m.tables.hot_cache_bytes > 0) {
      std::printf("%s: device hot-row cache %.1f MB (%.3g%% of the tables): hit rate %.1f%%\n",
                  m.name.c_str(), m.tables.hot_cache_bytes / 1e6,
                  100 * m.tables.hot_cache_bytes / tables, 100 * s.hot_hit_rate);
    }
    if (s.has_cache) {
      std::printf(
          "%s: row cache %.1f MB (%.3g%% of the tables): hit rate %.1f%%; %llu missed rows in "
          "%llu NVMe reads, %.1f reads per token\n",
          m.name.c_str(), m.tables.cache_bytes / 1e6, 100 * m.tables.cache_bytes / tables,
          100 * s.cache_hit_rate, static_cast<unsigned long long>(s.cache_misses),
          static_cast<unsigned long long>(s.io_reads), s.per_token(s.io_reads));
    }
  }
  return Status::Ok();
}

}  // namespace

int RunBenchOffload(int argc, char** argv) {
  auto args = Args::Parse(
      argc, argv, 3,
      {"model",          "compare",     "corpus",       "modes",       "backend",      "device",
       "threads",        "workload",    "batches",      "prompt-len",  "seqs",         "prompt-min",
       "prompt-max",     "seed",        "max-seqs",     "step-tokens", "decode-steps", "decode-max",
       "cache-fraction", "cache-bytes", "hot-fraction", "hot-bytes",   "repeats",      "warmup",
       "cuda-graphs",    "weights"},
      {"help", "json", "sequential", "verbose"});
  if (!args.ok() || args->Flag("help")) {
    std::fputs(kUsage, stderr);
    if (!args.ok()) return Fail("bench offload", args.status()) + 1;
    return 0;
  }
  Result<Options> o = ParseOptions(*args);
  if (!o.ok()) return Fail("bench offload", o.status()) + 1;
  Status st = BenchOffload(*o);
  return st.ok() ? 0 : Fail("bench offload", st);
}

}  // namespace engram::cli
