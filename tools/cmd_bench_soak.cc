// engram bench soak: a bounded soak of the whole serving stack, in this process, on loopback
// ports: an Engine with the Engram tables on the NVMe tier (io_uring + O_DIRECT, a small DRAM
// row cache, so rows are really read) whose reader fails random reads with -EIO (--fault-rate
// of them once: the reader's retry reads them; --fatal-fault-rate on every attempt: the
// requests that need those rows end with UNAVAILABLE), an EngineLoop, the gRPC EngramService
// on 127.0.0.1:0 and the MetricsExporter on 127.0.0.1:0.
//
// --streams client threads (real gRPC stubs over --channels connections) loop for --minutes
// on random Generate requests: token-id prompts of 1..256 ids, max_tokens 1..64, greedy or
// temperature sampling (top-k/top-p/min-p/penalties/logprobs at random), random stop token ids
// and EOS handling; ~10% cancelled by the client after a random number of messages, ~10% with
// a 5-200 ms deadline, ~3% invalid (each kind must be refused with the code docs/api.md
// gives). A scraper GETs /metrics every second; a sampler reads RSS, open fds and threads.
//
// At the end, with the clients stopped and the loop idle, it checks that every request the
// server received ended exactly once (received = rejected + finished), that no KV block and
// no sequence slot is held, that nothing runs or waits, that every client request ended in a
// way its plan allows, that every scrape answered 200, and that RSS / fds / threads did not
// grow after warm-up. Exit 0 when every check passes, 1 naming the failed ones.
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/support/channel_arguments.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "client.h"
#include "commands.h"
#include "engine_args.h"
#include "model/model_files.h"
#include "model/synth.h"
#include "runtime/engine.h"
#include "runtime/engine_loop.h"
#include "runtime/grpc_service.h"
#include "runtime/metrics_exporter.h"
#include "text/tokenizer.h"
#include "tiering/io_uring_reader.h"

namespace engram::cli {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

constexpr const char* kUsage =
    "usage: engram bench soak [options]\n"
    "  Runs the serving stack in this process (Engine on the NVMe tier with injected read\n"
    "  faults, EngineLoop, gRPC service on 127.0.0.1:0, metrics on 127.0.0.1:0), drives it\n"
    "  with random gRPC clients, then checks for leaks. Exit 0: every check passed; 1: the\n"
    "  failed checks are named; 2: usage; 77: no filesystem here accepts O_DIRECT.\n"
    "  --minutes M        how long the clients send (fractions accepted) [10]\n"
    "  --streams N        concurrent client threads [48]\n"
    "  --channels N       gRPC connections the streams share [4]\n"
    "  --seed S           requests, faults and synth weights [0]\n"
    "  --model SPEC       a model directory (on a filesystem with O_DIRECT), or synth:PRESET,\n"
    "                     written to a temporary directory under /tmp and removed at the end\n"
    "                     [synth:tiny]\n"
    "  --table-gb G       synth: size of the Engram tables in GB [0.016]\n"
    "  --cache-kib K      DRAM row cache of the NVMe tier, KiB [256]\n"
    "  --fault-rate F     fraction of NVMe reads failed once with -EIO (the reader's retry\n"
    "                     reads them) [0.005]\n"
    "  --fatal-fault-rate F  fraction failed on every attempt: the requests needing those\n"
    "                     rows end UNAVAILABLE [0.00005]\n"
    "  --backend cpu|cuda [cpu]   --threads N  CPU threads [0: all]\n"
    "  --max-seqs N       sequences alive at once [32]   --kv-tokens N  KV positions [16384]\n"
    "  --rss-bound-mib M  allowed RSS growth after warm-up: max(M MiB, 5% of RSS) [32]\n"
    "  --json FILE        write the counts, checks and samples as JSON to FILE\n"
    "  --verbose          keep the serving stack's log (injected faults log errors)\n";

struct Options {
  double minutes = 10;
  int streams = 48;
  int channels = 4;
  uint64_t seed = 0;
  std::string model = "synth:tiny";
  double table_gb = 0.016;
  uint64_t cache_bytes = 256 << 10;
  double fault_rate = 0.005;
  double fatal_fault_rate = 5e-5;
  std::string backend = "cpu";
  int threads = 0;
  int max_seqs = 32;
  int64_t kv_tokens = 16384;
  double rss_bound_mib = 32;
  std::string json_path;
  bool verbose = false;
};

Result<Options> ParseOptions(const Args& a) {
  Options o;
  ENGRAM_ASSIGN_OR_RETURN(o.minutes, a.GetDouble("minutes", o.minutes));
  ENGRAM_ASSIGN_OR_RETURN(long long streams, a.GetInt("streams", o.streams));
  ENGRAM_ASSIGN_OR_RETURN(long long channels, a.GetInt("channels", o.channels));
  ENGRAM_ASSIGN_OR_RETURN(long long seed, a.GetInt("seed", 0));
  ENGRAM_ASSIGN_OR_RETURN(o.table_gb, a.GetDouble("table-gb", o.table_gb));
  ENGRAM_ASSIGN_OR_RETURN(long long cache_kib, a.GetInt("cache-kib", 256));
  ENGRAM_ASSIGN_OR_RETURN(o.fault_rate, a.GetDouble("fault-rate", o.fault_rate));
  ENGRAM_ASSIGN_OR_RETURN(o.fatal_fault_rate, a.GetDouble("fatal-fault-rate", o.fatal_fault_rate));
  ENGRAM_ASSIGN_OR_RETURN(long long threads, a.GetInt("threads", 0));
  ENGRAM_ASSIGN_OR_RETURN(long long seqs, a.GetInt("max-seqs", o.max_seqs));
  ENGRAM_ASSIGN_OR_RETURN(long long kv, a.GetInt("kv-tokens", o.kv_tokens));
  ENGRAM_ASSIGN_OR_RETURN(o.rss_bound_mib, a.GetDouble("rss-bound-mib", o.rss_bound_mib));
  if (!(o.minutes > 0) || o.minutes > 24 * 60) {
    return InvalidArgument("--minutes {} must be in (0, 1440]", o.minutes);
  }
  if (streams < 1 || streams > 1024)
    return InvalidArgument("--streams {} must be in [1, 1024]", streams);
  if (channels < 1) return InvalidArgument("--channels {} must be >= 1", channels);
  if (seed < 0) return InvalidArgument("--seed {} must be >= 0", seed);
  if (!(o.table_gb > 0)) return InvalidArgument("--table-gb {} must be > 0", o.table_gb);
  if (cache_kib < 1) return InvalidArgument("--cache-kib {} must be >= 1", cache_kib);
  if (!(o.fault_rate >= 0 && o.fatal_fault_rate >= 0 && o.fault_rate + o.fatal_fault_rate <= 1)) {
    return InvalidArgument(
        "--fault-rate {} and --fatal-fault-rate {} must be >= 0, summing to <= 1", o.fault_rate,
        o.fatal_fault_rate);
  }
  if (threads < 0) return InvalidArgument("--threads {} must be >= 0", threads);
  if (seqs < 1) return InvalidArgument("--max-seqs {} must be >= 1", seqs);
  if (kv < 16) return InvalidArgument("--kv-tokens {} must be >= 16", kv);
  if (!(o.rss_bound_mib > 0)) return InvalidArgument("--rss-bound-mib must be > 0");
  o.streams = static_cast<int>(streams);
  o.channels = static_cast<int>(std::min(channels, streams));
  o.seed = static_cast<uint64_t>(seed);
  o.cache_bytes = static_cast<uint64_t>(cache_kib) << 10;
  o.threads = static_cast<int>(threads);
  o.max_seqs = static_cast<int>(seqs);
  o.kv_tokens = kv;
  o.model = a.Get("model").value_or(o.model);
  o.backend = a.Get("backend").value_or(o.backend);
  o.json_path = a.Get("json").value_or("");
  o.verbose = a.Flag("verbose");
  return o;
}

// A temporary directory on a filesystem that accepts O_DIRECT (the NVMe tier reads with it),
// removed with everything in it when this goes.
class DirectIoTempDir {
 public:
  // Tries /tmp, then /var/tmp; empty path() when neither accepts O_DIRECT.
  DirectIoTempDir() {
    for (const char* base : {"/tmp", "/var/tmp"}) {
      std::string templ = std::string(base) + "/engram-soak-XXXXXX";
      if (::mkdtemp(templ.data()) == nullptr) continue;
      const std::string probe = templ + "/odirect-probe";
      const int fd = ::open(probe.c_str(), O_CREAT | O_RDWR | O_DIRECT | O_CLOEXEC, 0600);
      if (fd >= 0) {
        ::close(fd);
        ::unlink(probe.c_str());
        path_ = templ;
        return;
      }
      std::error_code ec;
      fs::remove_all(templ, ec);
    }
  }
  ~DirectIoTempDir() {
    if (path_.empty()) return;
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  DirectIoTempDir(const DirectIoTempDir&) = delete;
  DirectIoTempDir& operator=(const DirectIoTempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// The NVMe reader's fault hook: fails `transient` of the reads (their first attempt) with -EIO,
// which the reader's retry then reads, and `fatal` of them on every attempt the reader makes
// (ReaderOptions::max_retries + 1), so that the read fails and so do the sequences needing it.
// Called on the reader's thread; counts() from any thread.
class FaultInjector {
 public:
  FaultInjector(double transient, double fatal, uint64_t seed)
      : transient_rate_(transient), fatal_rate_(fatal), rng_(seed ^ 0xfa017ull) {}

  int operator()(uint64_t offset, uint32_t length, int attempt) {
    static const int kAttempts = ReaderOptions{}.max_retries + 1;
    std::lock_guard<std::mutex> lock(mu_);
    const auto key = std::make_pair(offset, length);
    if (attempt > 0) {
      auto it = failing_.find(key);
      if (it == failing_.end()) return 0;  // transient (or a real retry): keep the result
      if (attempt + 1 >= kAttempts) failing_.erase(it);
      return -EIO;
    }
    ++reads_;
    const double u = std::uniform_real_distribution<double>(0, 1)(rng_);
    if (u < fatal_rate_) {
      ++persistent_;
      failing_.insert(key);
      return -EIO;
    }
    if (u < fatal_rate_ + transient_rate_) {
      ++transient_;
      return -EIO;
    }
    return 0;
  }

  struct Counts {
    int64_t reads = 0, transient = 0, persistent = 0;
  };
  Counts counts() const {
    std::lock_guard<std::mutex> lock(mu_);
    return {reads_, transient_, persistent_};
  }

 private:
  const double transient_rate_, fatal_rate_;
  mutable std::mutex mu_;
  std::mt19937_64 rng_;                                 // GUARDED_BY(mu_)
  std::set<std::pair<uint64_t, uint32_t>> failing_;     // GUARDED_BY(mu_)
  int64_t reads_ = 0, transient_ = 0, persistent_ = 0;  // GUARDED_BY(mu_)
};

// ---- the client side -------------------------------------------------------------------------

enum class Mode { kNormal, kCancel, kDeadline, kInvalid };

// One planned request and what its outcome may be.
struct Planned {
  v1::GenerateRequest req;
  Mode mode = Mode::kNormal;
  int cancel_after = 0;  // kCancel: TryCancel once this many messages arrived (0: at once)
  int deadline_ms = 0;   // kDeadline
  grpc::StatusCode expect = grpc::StatusCode::OK;  // kInvalid: the code docs/api.md gives
  std::string invalid_kind;                        // kInvalid
  int prompt_len = 0, max_tokens = 0;
  std::set<int32_t> stop_ids;  // stop_token_ids, plus the EOS ids unless ignore_eos
  bool stop_strings = false;
};

constexpr double kInvalidShare = 0.03, kCancelShare = 0.10, kDeadlineShare = 0.10;
// Requests without a short deadline get this one: a request that hangs ends as DEADLINE_EXCEEDED
// (counted as unexpected) instead of hanging the soak.
constexpr double kRequestTimeoutS = 120;

struct ModelShape {
  int32_t vocab = 0, context = 0;
  std::vector<int32_t> eos;
};

Planned MakeRequest(std::mt19937_64& rng, const ModelShape& m, int stream, uint64_t n) {
  auto uni = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  auto real = [&](double lo, double hi) {
    return std::uniform_real_distribution<double>(lo, hi)(rng);
  };
  auto chance = [&](double p) { return real(0, 1) < p; };
  Planned p;
  v1::GenerateRequest& req = p.req;
  const double u = real(0, 1);
  p.mode = u < kInvalidShare                                   ? Mode::kInvalid
           : u < kInvalidShare + kCancelShare                  ? Mode::kCancel
           : u < kInvalidShare + kCancelShare + kDeadlineShare ? Mode::kDeadline
                                                               : Mode::kNormal;
  p.prompt_len = uni(1, std::min(256, m.context - 65));
  for (int i = 0; i < p.prompt_len; ++i) req.mutable_token_ids()->add_ids(uni(0, m.vocab - 1));
  p.max_tokens = uni(1, 64);
  req.set_max_tokens(p.max_tokens);
  v1::SamplingParams* s = req.mutable_sampling();
  if (chance(0.5)) {
    s->set_temperature(0);  // greedy
  } else {
    s->set_temperature(static_cast<float>(real(0.2, 1.5)));
    if (chance(0.5)) s->set_top_k(uni(1, 64));
    if (chance(0.5)) s->set_top_p(static_cast<float>(real(0.5, 1.0)));
    if (chance(0.2)) s->set_min_p(static_cast<float>(real(0.0, 0.2)));
  }
  if (chance(0.2)) s->set_repetition_penalty(static_cast<float>(real(1.0, 1.3)));
  if (chance(0.2)) s->set_presence_penalty(static_cast<float>(real(-0.5, 0.5)));
  if (chance(0.2)) s->set_frequency_penalty(static_cast<float>(real(-0.5, 0.5)));
  if (chance(0.5)) s->set_seed(rng());
  if (chance(0.15)) req.set_logprobs(uni(1, 5));
  if (chance(0.3)) {
    for (int i = uni(1, 4); i > 0; --i) {
      const int32_t id = uni(0, m.vocab - 1);
      req.add_stop_token_ids(id);
      p.stop_ids.insert(id);
    }
  }
  if (chance(0.15)) {
    req.add_stop("\n\n");
    req.add_stop("END");
    p.stop_strings = true;
  }
  req.set_ignore_eos(chance(0.5));
  if (!req.ignore_eos()) p.stop_ids.insert(m.eos.begin(), m.eos.end());
  if (chance(0.5)) req.set_request_id(fmt::format("soak-{}-{}", stream, n));
  switch (p.mode) {
    case Mode::kCancel:
      p.cancel_after = uni(0, p.max_tokens);
      break;
    case Mode::kDeadline:
      p.deadline_ms = uni(5, 200);
      break;
    case Mode::kInvalid: {
      // One thing wrong, and the code docs/api.md gives for it.
      using C = grpc::StatusCode;
      auto wrong = [&](const char* kind, C code) {
        p.invalid_kind = kind;
        p.expect = code;
      };
      auto ids = req.mutable_token_ids();
      switch (uni(0, 9)) {
        case 0:
          ids->set_ids(uni(0, p.prompt_len - 1), m.vocab + uni(0, 1000));
          wrong("token id >= vocab", C::OUT_OF_RANGE);
          break;
        case 1:
          ids->set_ids(uni(0, p.prompt_len - 1), -uni(1, 1000));
          wrong("negative token id", C::OUT_OF_RANGE);
          break;
        case 2:
          req.set_max_tokens(-uni(1, 1000));
          wrong("max_tokens < 0", C::INVALID_ARGUMENT);
          break;
        case 3:
          req.set_max_tokens(m.context + uni(0, 1 << 20));
          wrong("max_tokens past the context", C::OUT_OF_RANGE);
          break;
        case 4:
          s->set_temperature(-static_cast<float>(real(0.01, 2)));
          wrong("temperature < 0", C::INVALID_ARGUMENT);
          break;
        case 5:
          s->set_top_p(static_cast<float>(real(1.01, 3)));
          wrong("top_p > 1", C::INVALID_ARGUMENT);
          break;
        case 6:
          req.set_logprobs(uni(21, 1000));
          wrong("logprobs > 20", C::INVALID_ARGUMENT);
          break;
        case 7:
          ids->clear_ids();
          wrong("empty prompt", C::INVALID_ARGUMENT);
          break;
        case 8:
          req.add_stop(std::string("ab\xff", 3));
          wrong("stop not UTF-8", C::INVALID_ARGUMENT);
          break;
        default:
          while (ids->ids_size() < m.context) ids->add_ids(uni(0, m.vocab - 1));
          wrong("prompt as long as the context", C::OUT_OF_RANGE);
          break;
      }
      break;
    }
    case Mode::kNormal:
      break;
  }
  return p;
}

// How the client saw its requests end; counters by name: sent, stop and length (OK with that
// finish reason), rejected (invalid, refused with the expected code), cancelled (CANCELLED after
// the client's TryCancel), deadline (DEADLINE_EXCEEDED with a short deadline), nvme_fault
// (UNAVAILABLE: rows could not be read), planned_{cancel,deadline,invalid}, cancel_too_late and
// deadline_met (planned so but finished first), tokens (ids received), unexpected (an outcome
// the plan does not allow) and bad_responses (OK, but the stream contradicts the request).
struct Tally {
  std::map<std::string, int64_t> n;
  std::map<std::string, int64_t> rejected_by_kind;
  std::vector<std::string> samples;  // the first problems, for the report
  std::string fault_message;         // one UNAVAILABLE message, for the report

  int64_t& operator[](const std::string& key) { return n[key]; }
  void Problem(const char* counter, std::string what) {
    ++n[counter];
    if (samples.size() < 10) samples.push_back(std::move(what));
  }
  void Merge(const Tally& o) {
    for (const auto& [k, v] : o.n) n[k] += v;
    for (const auto& [k, v] : o.rejected_by_kind) rejected_by_kind[k] += v;
    for (const std::string& x : o.samples) {
      if (samples.size() < 10) samples.push_back(x);
    }
    if (fault_message.empty()) fault_message = o.fault_message;
  }
};

const char* CodeName(grpc::StatusCode c) { return StatusCodeName(static_cast<StatusCode>(c)); }

// Sends one planned request and records how it ended.
void RunOne(v1::Engram::Stub& stub, const Planned& p, int32_t vocab, Tally& t) {
  ++t["sent"];
  if (p.mode == Mode::kCancel) ++t["planned_cancel"];
  if (p.mode == Mode::kDeadline) ++t["planned_deadline"];
  if (p.mode == Mode::kInvalid) ++t["planned_invalid"];
  grpc::ClientContext ctx;
  if (p.mode == Mode::kDeadline) {
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(p.deadline_ms));
  } else {
    SetTimeout(&ctx, kRequestTimeoutS);
  }
  auto reader = stub.Generate(&ctx, p.req);
  bool cancel_sent = false;
  if (p.mode == Mode::kCancel && p.cancel_after == 0) {
    ctx.TryCancel();
    cancel_sent = true;
  }
  int messages = 0, finals = 0;
  std::vector<int32_t> out;
  v1::GenerateResponse msg, last;
  while (reader->Read(&msg)) {
    ++messages;
    out.insert(out.end(), msg.token_ids().begin(), msg.token_ids().end());
    if (msg.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
      ++finals;
      last = msg;
    }
    if (p.mode == Mode::kCancel && !cancel_sent && messages >= p.cancel_after) {
      ctx.TryCancel();
      cancel_sent = true;
    }
  }
  const grpc::Status st = reader->Finish();
  t["tokens"] += static_cast<int64_t>(out.size());
  const grpc::StatusCode code = st.error_code();
  const std::string what =
      fmt::format("{} (prompt {} ids, max_tokens {}): {} \"{}\"",
                  p.mode == Mode::kInvalid ? p.invalid_kind : "request", p.prompt_len, p.max_tokens,
                  CodeName(code), st.error_message());
  if (p.mode == Mode::kInvalid) {
    if (code == p.expect && messages == 0) {
      ++t["rejected"];
      ++t.rejected_by_kind[p.invalid_kind];
    } else {
      t.Problem("unexpected", fmt::format("invalid {} expected {}", what, CodeName(p.expect)));
    }
    return;
  }
  if (static_cast<int>(out.size()) > p.max_tokens || finals > 1) {
    t.Problem("bad_responses",
              fmt::format("{}: {} tokens, {} final messages", what, out.size(), finals));
    return;
  }
  for (int32_t id : out) {
    if (id < 0 || id >= vocab) {
      t.Problem("bad_responses", fmt::format("{}: token id {} outside the vocabulary", what, id));
      return;
    }
  }
  switch (code) {
    case grpc::StatusCode::OK: {
      const v1::FinishReason r = last.finish_reason();
      const int n = static_cast<int>(out.size());
      if (finals != 1 || (r != v1::FINISH_REASON_STOP && r != v1::FINISH_REASON_LENGTH)) {
        t.Problem("bad_responses",
                  fmt::format("{}: OK with finish reason {}", what, FinishName(r)));
        return;
      }
      if (last.usage().completion_tokens() != n || last.usage().prompt_tokens() != p.prompt_len) {
        t.Problem("bad_responses",
                  fmt::format("{}: usage says {} prompt / {} completion tokens, got {} / {}", what,
                              last.usage().prompt_tokens(), last.usage().completion_tokens(),
                              p.prompt_len, n));
        return;
      }
      if (r == v1::FINISH_REASON_LENGTH && n != p.max_tokens) {
        t.Problem("bad_responses", fmt::format("{}: length after {} tokens", what, n));
        return;
      }
      // A stop string needs a tokenizer (text); otherwise the last token is a stop id or EOS.
      if (r == v1::FINISH_REASON_STOP && !p.stop_strings &&
          (n == 0 || !p.stop_ids.count(out.back()))) {
        t.Problem("bad_responses", fmt::format("{}: stop after {} tokens, last {} is no stop id",
                                               what, n, n ? out.back() : -1));
        return;
      }
      ++t[r == v1::FINISH_REASON_STOP ? "stop" : "length"];
      if (p.mode == Mode::kCancel) ++t["cancel_too_late"];
      if (p.mode == Mode::kDeadline) ++t["deadline_met"];
      return;
    }
    case grpc::StatusCode::CANCELLED:
      if (cancel_sent) {
        ++t["cancelled"];
      } else {
        t.Problem("unexpected", what);
      }
      return;
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      if (p.mode == Mode::kDeadline) {
        ++t["deadline"];
      } else {
        t.Problem("unexpected", fmt::format("{} (stuck for {} s?)", what, kRequestTimeoutS));
      }
      return;
    case grpc::StatusCode::UNAVAILABLE:
      ++t["nvme_fault"];
      if (t.fault_message.empty()) t.fault_message = st.error_message();
      return;
    default:
      t.Problem("unexpected", what);
      return;
  }
}

// ---- /metrics and /proc ----------------------------------------------------------------------

// GET http://127.0.0.1:port/metrics over a plain socket (HTTP/1.0: the server closes); the
// whole response, "" when it cannot connect.
std::string HttpGetMetrics(int port, double timeout_s) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "";
  timeval tv{static_cast<time_t>(timeout_s), 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return "";
  }
  const std::string request = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  size_t off = 0;
  while (off < request.size()) {
    const ssize_t n = ::send(fd, request.data() + off, request.size() - off, MSG_NOSIGNAL);
    if (n <= 0) break;
    off += static_cast<size_t>(n);
  }
  std::string response;
  char buf[8192];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) response.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return response;
}

int HttpStatusOf(const std::string& response) {
  if (response.rfind("HTTP/1.", 0) != 0) return 0;
  const size_t sp = response.find(' ');
  return sp == std::string::npos ? 0 : std::atoi(response.c_str() + sp + 1);
}

// The value of the first sample of `name` in a Prometheus text body; nullopt when absent.
std::optional<double> MetricValue(const std::string& body, const std::string& name) {
  std::istringstream in(body);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(name, 0) != 0) continue;
    const char next = line.size() > name.size() ? line[name.size()] : '\0';
    if (next != ' ' && next != '{') continue;
    const size_t sp = line.rfind(' ');
    return std::strtod(line.c_str() + sp + 1, nullptr);
  }
  return std::nullopt;
}

struct ProcSample {
  double t_s = 0;  // since the clients started
  int64_t rss_bytes = 0;
  int fds = 0, threads = 0;
  int64_t requests_done = 0;
  int64_t running = 0, waiting = 0;
  int kv_blocks_free = 0;
};

int64_t ResidentBytes() {
  std::ifstream f("/proc/self/statm");
  int64_t size = 0, resident = 0;
  f >> size >> resident;
  return resident * static_cast<int64_t>(::sysconf(_SC_PAGESIZE));
}

int OpenFds() {
  std::error_code ec;
  int n = 0;
  for (auto it = fs::directory_iterator("/proc/self/fd", ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    ++n;
  }
  return n - 1;  // the iterator's own
}

int Threads() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("Threads:", 0) == 0) return std::atoi(line.c_str() + 8);
  }
  return 0;
}

// ---- the soak --------------------------------------------------------------------------------

struct Check {
  std::string name;
  bool pass = false;
  std::string detail;
};

// Samples in [lo, hi) of the run's duration.
std::vector<ProcSample> Window(const std::vector<ProcSample>& s, double lo, double hi) {
  std::vector<ProcSample> out;
  for (const ProcSample& x : s) {
    if (x.t_s >= lo && x.t_s < hi) out.push_back(x);
  }
  return out;
}

double MiB(int64_t bytes) { return static_cast<double>(bytes) / (1 << 20); }

// What a soak measured, for the checks and the report.
struct Run {
  std::string backend;
  double duration_s = 0, sample_every_s = 0, client_s = 0;
  Tally total;
  ServingStats ss;  // after the loop went idle
  int in_flight = 0;
  std::vector<ProcSample> samples;
  int64_t scrapes = 0, scrapes_ok = 0;
  std::string scrape_failure;  // the first, if any
  std::string final_scrape;    // the response to a scrape once idle
  int64_t rss_idle = 0;
  FaultInjector::Counts faults;
  TierStats tier;
  // From the rss check.
  double growth_mib = 0, bound_mib = 0;
};

std::vector<Check> Evaluate(const Options& o, Run& r) {
  std::vector<Check> checks;
  auto check = [&](std::string name, bool pass, std::string detail) {
    checks.push_back({std::move(name), pass, std::move(detail)});
  };
  const ServingStats& ss = r.ss;
  Tally& t = r.total;
  auto reason = [&](const char* k) {
    auto it = ss.finished_by_reason.find(k);
    return it == ss.finished_by_reason.end() ? int64_t{0} : it->second;
  };
  check("accounting", ss.requests_received == ss.requests_rejected + ss.requests_finished,
        fmt::format("server received {} = rejected {} + finished {}", ss.requests_received,
                    ss.requests_rejected, ss.requests_finished));
  check("idle", r.in_flight == 0 && ss.requests_running == 0 && ss.requests_waiting == 0,
        fmt::format("InFlight {}, running {}, waiting {}", r.in_flight, ss.requests_running,
                    ss.requests_waiting));
  check("kv blocks", ss.kv_blocks_free == ss.kv_blocks_total,
        fmt::format("{} of {} free", ss.kv_blocks_free, ss.kv_blocks_total));
  check("sequence slots", ss.seq_slots_free == ss.seq_slots_total,
        fmt::format("{} of {} free", ss.seq_slots_free, ss.seq_slots_total));
  check("client outcomes", t["unexpected"] == 0 && t["bad_responses"] == 0,
        fmt::format("{} unexpected outcomes, {} contradicting streams{}", t["unexpected"],
                    t["bad_responses"], t.samples.empty() ? "" : "; first: " + t.samples.front()));
  check("rejections", ss.requests_rejected == t["rejected"],
        fmt::format("server rejected {}, clients saw {} invalid requests refused",
                    ss.requests_rejected, t["rejected"]));
  // A request whose client gave up before it reached the handler (cancel at once, a few ms of
  // deadline) is never received; every other one is. A server stop/length may reach its
  // client as cancelled or past its deadline (a race the client loses), never the reverse.
  const int64_t may_vanish = t["cancelled"] + t["deadline"];
  check("client vs server",
        ss.requests_received <= t["sent"] && ss.requests_received >= t["sent"] - may_vanish &&
            reason("stop") >= t["stop"] && reason("length") >= t["length"] &&
            ss.generation_tokens >= t["tokens"],
        fmt::format("sent {}, received {} (>= {}); stop {} >= {}; length {} >= {}; tokens "
                    "generated {} >= received {}",
                    t["sent"], ss.requests_received, t["sent"] - may_vanish, reason("stop"),
                    t["stop"], reason("length"), t["length"], ss.generation_tokens, t["tokens"]));
  const std::optional<double> running = MetricValue(r.final_scrape, "engram_num_requests_running");
  check("metrics scrapes",
        r.scrapes > 0 && r.scrapes_ok == r.scrapes && HttpStatusOf(r.final_scrape) == 200 &&
            running == 0.0,
        fmt::format("{} of {} answered 200 with the serving metrics{}; idle scrape: HTTP {}, "
                    "engram_num_requests_running {}",
                    r.scrapes_ok, r.scrapes,
                    r.scrape_failure.empty() ? "" : ", first failure " + r.scrape_failure,
                    HttpStatusOf(r.final_scrape), running.value_or(-1)));
  if (r.faults.persistent >= 10) {
    check("faults reach clients", t["nvme_fault"] > 0,
          fmt::format("{} reads failed on every attempt; {} requests ended UNAVAILABLE",
                      r.faults.persistent, t["nvme_fault"]));
  }
  // Leaks: after warm-up (the first 20%: caches, allocator arenas, gRPC's thread pool), the
  // last 20% may not exceed the 20-40% window by more than the bound.
  const auto warm = Window(r.samples, 0.2 * r.duration_s, 0.4 * r.duration_s);
  const auto tail = Window(r.samples, 0.8 * r.duration_s, 1e18);
  if (warm.empty() || tail.empty()) {
    check("rss", false, "too few samples in the 20-40% and last-20% windows");
    return checks;
  }
  int64_t warm_min = INT64_MAX, tail_max = 0;
  int warm_fds = 0, tail_fds = 0, warm_thr = 0, tail_thr = 0;
  for (const ProcSample& s : warm) {
    warm_min = std::min(warm_min, s.rss_bytes);
    warm_fds = std::max(warm_fds, s.fds);
    warm_thr = std::max(warm_thr, s.threads);
  }
  for (const ProcSample& s : tail) {
    tail_max = std::max(tail_max, s.rss_bytes);
    tail_fds = std::max(tail_fds, s.fds);
    tail_thr = std::max(tail_thr, s.threads);
  }
  r.growth_mib = MiB(tail_max - warm_min);
  r.bound_mib = std::max(o.rss_bound_mib, 0.05 * MiB(warm_min));
  const int64_t reqs = tail.back().requests_done - warm.front().requests_done;
  const double leak_per_req = reqs > 0 ? r.bound_mib * (1 << 20) / static_cast<double>(reqs) : 0;
  check("rss", r.growth_mib <= r.bound_mib,
        fmt::format("max of the last 20% {:.1f} MiB - min of 20-40% {:.1f} MiB = {:+.1f} MiB "
                    "(bound {:.1f} MiB: a leak of {:.0f} bytes per request over the {} requests "
                    "between would exceed it)",
                    MiB(tail_max), MiB(warm_min), r.growth_mib, r.bound_mib, leak_per_req, reqs));
  constexpr int kSlack = 16;
  check("fds and threads", tail_fds <= warm_fds + kSlack && tail_thr <= warm_thr + kSlack,
        fmt::format("fds {} -> {}, threads {} -> {} (max of 20-40% -> max of the last 20%, "
                    "slack {})",
                    warm_fds, tail_fds, warm_thr, tail_thr, kSlack));
  return checks;
}

void Print(Run& r, const std::vector<Check>& checks) {
  Tally& t = r.total;
  const ServingStats& ss = r.ss;
  fmt::print("\nclients ({:.1f} s): {} requests sent ({:.1f}/s), {} tokens received ({:.1f}/s)\n",
             r.client_s, t["sent"], static_cast<double>(t["sent"]) / r.client_s, t["tokens"],
             static_cast<double>(t["tokens"]) / r.client_s);
  fmt::print(
      "  finished: {} stop, {} length; cancelled {} (of {} planned; {} finished first); "
      "deadline {} (of {} planned; {} finished first); rejected {} (of {} invalid); "
      "UNAVAILABLE from NVMe faults {}; unexpected {}; contradicting {}\n",
      t["stop"], t["length"], t["cancelled"], t["planned_cancel"], t["cancel_too_late"],
      t["deadline"], t["planned_deadline"], t["deadline_met"], t["rejected"], t["planned_invalid"],
      t["nvme_fault"], t["unexpected"], t["bad_responses"]);
  for (const std::string& s : t.samples) fmt::print("    problem: {}\n", s);
  if (!t.fault_message.empty()) fmt::print("  a fault's status: {}\n", t.fault_message);
  std::string reasons;
  for (const auto& [k, v] : ss.finished_by_reason) reasons += fmt::format(" {} {}", k, v);
  fmt::print(
      "server: received {}, rejected {}, finished {} ({} ); {} prompt + {} generated tokens in "
      "{} steps ({:.2f} ms, {:.1f} tokens each)\n",
      ss.requests_received, ss.requests_rejected, ss.requests_finished, reasons, ss.prompt_tokens,
      ss.generation_tokens, ss.steps, ss.mean_step_s * 1e3, ss.mean_batch_tokens);
  fmt::print(
      "NVMe tier: {} reads, {} retries, row cache hit rate {:.3f}; injected {} transient + {} "
      "persistent faults over {} reads\n",
      r.tier.io_reads, r.tier.io_retries, r.tier.cache_hit_rate(), r.faults.transient,
      r.faults.persistent, r.faults.reads);
  fmt::print("RSS (every {:.1f} s, {} samples; idle after the run {:.1f} MiB):\n", r.sample_every_s,
             r.samples.size(), MiB(r.rss_idle));
  fmt::print("  {:>8} {:>10} {:>6} {:>8} {:>10} {:>8}\n", "t (s)", "RSS (MiB)", "fds", "threads",
             "requests", "running");
  const size_t rows = std::min<size_t>(r.samples.size(), 11);
  for (size_t k = 0; k < rows; ++k) {
    const ProcSample& s = r.samples[rows > 1 ? k * (r.samples.size() - 1) / (rows - 1) : 0];
    fmt::print("  {:>8.0f} {:>10.1f} {:>6} {:>8} {:>10} {:>8}\n", s.t_s, MiB(s.rss_bytes), s.fds,
               s.threads, s.requests_done, s.running);
  }
  fmt::print("checks:\n");
  for (const Check& c : checks) {
    fmt::print("  {} {}: {}\n", c.pass ? "PASS" : "FAIL", c.name, c.detail);
  }
  std::fflush(stdout);
}

void WriteJson(const Options& o, const Run& r, const std::vector<Check>& checks) {
  const ServingStats& ss = r.ss;
  json j;
  j["options"] = {{"minutes", o.minutes},
                  {"streams", o.streams},
                  {"channels", o.channels},
                  {"seed", o.seed},
                  {"model", o.model},
                  {"table_gb", o.table_gb},
                  {"cache_bytes", o.cache_bytes},
                  {"fault_rate", o.fault_rate},
                  {"fatal_fault_rate", o.fatal_fault_rate},
                  {"backend", r.backend},
                  {"max_seqs", o.max_seqs},
                  {"kv_tokens", o.kv_tokens}};
  j["client"] = r.total.n;
  j["client"]["seconds"] = r.client_s;
  j["client"]["rejected_by_kind"] = r.total.rejected_by_kind;
  j["client"]["problems"] = r.total.samples;
  j["server"] = {{"received", ss.requests_received},
                 {"rejected", ss.requests_rejected},
                 {"finished", ss.requests_finished},
                 {"finished_by_reason", ss.finished_by_reason},
                 {"running", ss.requests_running},
                 {"waiting", ss.requests_waiting},
                 {"in_flight", r.in_flight},
                 {"prompt_tokens", ss.prompt_tokens},
                 {"generation_tokens", ss.generation_tokens},
                 {"steps", ss.steps},
                 {"kv_blocks_free", ss.kv_blocks_free},
                 {"kv_blocks_total", ss.kv_blocks_total},
                 {"seq_slots_free", ss.seq_slots_free},
                 {"seq_slots_total", ss.seq_slots_total}};
  j["nvme"] = {{"reads", r.tier.io_reads},
               {"retries", r.tier.io_retries},
               {"cache_hit_rate", r.tier.cache_hit_rate()},
               {"injected_transient", r.faults.transient},
               {"injected_persistent", r.faults.persistent},
               {"hooked_reads", r.faults.reads}};
  j["scrapes"] = {{"total", r.scrapes}, {"ok", r.scrapes_ok}};
  j["rss"] = {
      {"growth_mib", r.growth_mib}, {"bound_mib", r.bound_mib}, {"idle_mib", MiB(r.rss_idle)}};
  j["samples"] = json::array();
  for (const ProcSample& s : r.samples) {
    j["samples"].push_back({{"t_s", s.t_s},
                            {"rss_bytes", s.rss_bytes},
                            {"fds", s.fds},
                            {"threads", s.threads},
                            {"requests_done", s.requests_done},
                            {"running", s.running},
                            {"waiting", s.waiting},
                            {"kv_blocks_free", s.kv_blocks_free}});
  }
  bool pass = true;
  j["checks"] = json::array();
  for (const Check& c : checks) {
    j["checks"].push_back({{"name", c.name}, {"pass", c.pass}, {"detail", c.detail}});
    pass = pass && c.pass;
  }
  j["pass"] = pass;
  std::ofstream f(o.json_path);
  f << j.dump(2) << "\n";
  if (!f) std::fprintf(stderr, "engram bench soak: cannot write %s\n", o.json_path.c_str());
}

int Soak(const Options& o) {
  const bool quiet_logs = !o.verbose && std::getenv("ENGRAM_LOG_LEVEL") == nullptr;
  // Injected faults make the loop log an error per failed request: expected here.
  if (quiet_logs) spdlog::set_level(spdlog::level::critical);

  // The model, on a filesystem that takes O_DIRECT.
  std::unique_ptr<DirectIoTempDir> tmp;
  std::string model_dir = o.model;
  if (o.model.rfind("synth:", 0) == 0) {
    SynthOptions so;
    so.preset = o.model.substr(6);
    if (so.preset.find('?') != std::string::npos) {
      return Fail("bench soak", InvalidArgument("--model {}: synth parameters are options here "
                                                "(--table-gb, --seed)",
                                                o.model)) +
             1;
    }
    so.seed = o.seed;
    so.table_gb = o.table_gb;
    so.progress = false;
    tmp = std::make_unique<DirectIoTempDir>();
    if (tmp->path().empty()) {
      std::fprintf(stderr,
                   "engram bench soak: skipped: neither /tmp nor /var/tmp accepts O_DIRECT (the "
                   "NVMe tier needs it)\n");
      return 77;
    }
    model_dir = tmp->path() + "/model";
    if (Status st = WriteSynthModel(so, model_dir); !st.ok()) return Fail("bench soak", st);
  }
  auto files = OpenModel(model_dir);
  if (!files.ok()) return Fail("bench soak", files.status());
  std::shared_ptr<const Tokenizer> tokenizer;
  if (!files->tokenizer_path.empty()) {
    auto tok = Tokenizer::Load(files->tokenizer_path);
    if (!tok.ok()) return Fail("bench soak", tok.status());
    tokenizer = std::make_shared<const Tokenizer>(std::move(tok).value());
  }

  auto faults = std::make_shared<FaultInjector>(o.fault_rate, o.fatal_fault_rate, o.seed);
  EngineOptions eo;
  eo.backend.kind = o.backend;
  eo.backend.threads = o.threads;
  eo.max_seqs = o.max_seqs;
  eo.kv_tokens = o.kv_tokens;
  eo.tables.tier = "nvme";
  eo.tables.cache_bytes = o.cache_bytes;
  eo.tables.nvme_fault_hook = [faults](uint64_t off, uint32_t len, int attempt) {
    return (*faults)(off, len, attempt);
  };
  auto engine = Engine::Create(std::move(files).value(), eo);
  if (!engine.ok()) return Fail("bench soak", engine.status().WithContext("engine"));
  const std::string backend_name((*engine)->backend().name());
  ModelShape shape;
  shape.vocab = static_cast<int32_t>((*engine)->config().vocab_size);
  shape.context = static_cast<int32_t>((*engine)->config().max_position_embeddings);
  for (int64_t e : (*engine)->config().eos_token_ids) shape.eos.push_back(static_cast<int32_t>(e));
  if (shape.context < 130) {
    return Fail("bench soak", FailedPrecondition("the model's context of {} tokens is too short "
                                                 "for the soak's requests (>= 130)",
                                                 shape.context));
  }

  ServingOptions sopt;
  sopt.limits.max_running_seqs = o.max_seqs;
  auto loop = std::make_unique<EngineLoop>(std::move(engine).value(), tokenizer, sopt);

  EngramService service(ServiceOptions{});
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    return Fail("bench soak", Unavailable("cannot listen on 127.0.0.1:0 for gRPC"));
  }
  service.SetLoop(loop.get(), tokenizer,
                  DescribeModel(loop->engine(), backend_name, tokenizer != nullptr));
  auto metrics = MetricsExporter::Start("127.0.0.1:0", *loop);
  if (!metrics.ok()) return Fail("bench soak", metrics.status());
  const int metrics_port = (*metrics)->port();

  const std::string address = fmt::format("127.0.0.1:{}", port);
  std::vector<std::unique_ptr<v1::Engram::Stub>> stubs;
  for (int c = 0; c < o.channels; ++c) {
    grpc::ChannelArguments ch_args;
    ch_args.SetMaxReceiveMessageSize(-1);
    ch_args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a connection of its own
    auto channel = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), ch_args);
    if (Status st = WaitConnected(*channel, address, 10); !st.ok()) return Fail("bench soak", st);
    stubs.push_back(v1::Engram::NewStub(channel));
  }

  Run r;
  r.backend = backend_name;
  const double duration_s = r.duration_s = o.minutes * 60;
  const double sample_every_s = r.sample_every_s = std::clamp(duration_s / 60, 0.5, 5.0);
  std::printf(
      "engram bench soak: %.2f min, %d streams over %d connections, seed %llu; model %s "
      "(vocab %d, context %d) on %s, NVMe tier with a %.0f KiB row cache, %.3f%% of reads "
      "failed once and %.4f%% on every attempt; gRPC on %s, metrics on 127.0.0.1:%d\n",
      o.minutes, o.streams, o.channels, static_cast<unsigned long long>(o.seed), o.model.c_str(),
      shape.vocab, shape.context, backend_name.c_str(), static_cast<double>(o.cache_bytes) / 1024,
      o.fault_rate * 100, o.fatal_fault_rate * 100, address.c_str(), metrics_port);
  std::fflush(stdout);

  const auto t0 = Clock::now();
  const auto end =
      t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(duration_s));
  auto since = [&](Clock::time_point t) { return std::chrono::duration<double>(t - t0).count(); };
  std::atomic<int64_t> done{0};
  std::atomic<bool> stop_watchers{false};
  std::mutex tally_mu;

  std::vector<std::thread> streams;
  for (int i = 0; i < o.streams; ++i) {
    streams.emplace_back([&, i] {
      std::mt19937_64 rng(o.seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(i) + 1);
      v1::Engram::Stub& stub = *stubs[static_cast<size_t>(i % o.channels)];
      Tally t;
      for (uint64_t n = 0; Clock::now() < end; ++n) {
        RunOne(stub, MakeRequest(rng, shape, i, n), shape.vocab, t);
        done.fetch_add(1, std::memory_order_relaxed);
      }
      std::lock_guard<std::mutex> lock(tally_mu);
      r.total.Merge(t);
    });
  }

  // Scraper: /metrics once a second.
  std::thread scraper([&] {
    auto next = Clock::now();
    while (!stop_watchers.load()) {
      const std::string resp = HttpGetMetrics(metrics_port, 5);
      ++r.scrapes;
      const int code = HttpStatusOf(resp);
      if (code == 200 && resp.find("engram_num_requests_running") != std::string::npos) {
        ++r.scrapes_ok;
      } else if (r.scrape_failure.empty()) {
        r.scrape_failure =
            fmt::format("at {:.1f} s: HTTP {} ({} bytes)", since(Clock::now()), code, resp.size());
      }
      next += std::chrono::seconds(1);
      while (!stop_watchers.load() && Clock::now() < next) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    }
  });

  // Sampler: RSS, fds, threads and the loop's occupancy; a progress line every ~10%.
  std::thread sampler([&] {
    auto next = Clock::now();
    double next_progress = duration_s / 10;
    while (!stop_watchers.load()) {
      ProcSample s;
      s.t_s = since(Clock::now());
      s.rss_bytes = ResidentBytes();
      s.fds = OpenFds();
      s.threads = Threads();
      s.requests_done = done.load();
      const ServingStats st = loop->Stats();
      s.running = st.requests_running;
      s.waiting = st.requests_waiting;
      s.kv_blocks_free = st.kv_blocks_free;
      r.samples.push_back(s);
      if (s.t_s >= next_progress) {
        std::fprintf(stderr,
                     "  %6.0f s: %lld requests done, RSS %.1f MiB, %d fds, %d threads, %lld "
                     "running, %lld waiting\n",
                     s.t_s, static_cast<long long>(s.requests_done), MiB(s.rss_bytes), s.fds,
                     s.threads, static_cast<long long>(s.running),
                     static_cast<long long>(s.waiting));
        next_progress += duration_s / 10;
      }
      next += std::chrono::duration_cast<Clock::duration>(
          std::chrono::duration<double>(sample_every_s));
      while (!stop_watchers.load() && Clock::now() < next) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    }
  });

  for (std::thread& t : streams) t.join();
  r.client_s = since(Clock::now());
  stop_watchers.store(true);
  scraper.join();
  sampler.join();

  // Quiesce: the server's handlers return (a short-deadline request may still be entering
  // Submit), then the loop ends what it holds and publishes its counters.
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(30));
  const auto quiet_by = Clock::now() + std::chrono::seconds(30);
  while (loop->InFlight() > 0 && Clock::now() < quiet_by) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  r.ss = loop->Stats();
  for (int i = 0; i < 100 && (r.ss.kv_blocks_free != r.ss.kv_blocks_total ||
                              r.ss.seq_slots_free != r.ss.seq_slots_total);
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // the loop's idle tick
    r.ss = loop->Stats();
  }
  r.in_flight = loop->InFlight();
  r.final_scrape = HttpGetMetrics(metrics_port, 5);
  r.rss_idle = ResidentBytes();
  r.faults = faults->counts();
  r.tier = loop->engine().tier_stats();
  metrics->reset();
  loop.reset();

  const std::vector<Check> checks = Evaluate(o, r);
  Print(r, checks);
  if (!o.json_path.empty()) WriteJson(o, r, checks);
  std::string failed;
  for (const Check& c : checks) {
    if (!c.pass) failed += (failed.empty() ? "" : ", ") + c.name;
  }
  if (failed.empty()) {
    std::printf("soak PASSED\n");
    return 0;
  }
  std::printf("soak FAILED: %s\n", failed.c_str());
  return 1;
}

}  // namespace

int RunBenchSoak(int argc, char** argv) {
  // argv: engram bench soak [options]
  auto args = Args::Parse(
      argc, argv, 3,
      {"minutes", "streams", "channels", "seed", "model", "table-gb", "cache-kib", "fault-rate",
       "fatal-fault-rate", "backend", "threads", "max-seqs", "kv-tokens", "rss-bound-mib", "json"},
      {"help", "verbose"});
  if (!args.ok() || args->Flag("help")) {
    std::fputs(kUsage, stderr);
    if (!args.ok()) return Fail("bench soak", args.status()) + 1;
    return 0;
  }
  auto o = ParseOptions(*args);
  if (!o.ok()) return Fail("bench soak", o.status()) + 1;
  return Soak(*o);
}

}  // namespace engram::cli
