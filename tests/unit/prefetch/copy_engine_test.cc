// CopyEngine on the CPU backend over a host tier of in-memory BF16 tables: each Engram layer's
// rows equal the tables' rows (widened to F32) in both transfer modes, with and without
// prefetch and the hot-row cache, over steps whose size grows and shrinks; and a step whose
// buffers cannot be allocated fails alone, the next step growing them again.
#include "prefetch/copy_engine.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <limits>
#include <random>
#include <thread>

#include "common/dtype.h"
#include "tiering/host_tier.h"

namespace engram {
namespace {

constexpr int kLayers = 2, kHeads = 4;
constexpr int64_t kRows = 1000, kDh = 8;

// The CPU backend, except that AllocZeros of more than `zeros_limit` bytes fails the way a
// device out of memory does. Everything else is forwarded.
class AllocLimitBackend final : public Backend {
 public:
  explicit AllocLimitBackend(std::unique_ptr<Backend> inner) : b_(std::move(inner)) {}
  size_t zeros_limit = std::numeric_limits<size_t>::max();

  std::string_view name() const override { return b_->name(); }
  Device device() const override { return b_->device(); }
  DType kv_dtype() const override { return b_->kv_dtype(); }
  Result<Tensor> Alloc(DType dtype, std::vector<int64_t> shape) override {
    return b_->Alloc(dtype, std::move(shape));
  }
  Result<Tensor> AllocZeros(DType dtype, std::vector<int64_t> shape) override {
    size_t bytes = DTypeSize(dtype);
    for (const int64_t d : shape) bytes *= static_cast<size_t>(d);
    if (bytes > zeros_limit) {
      return ResourceExhausted("test backend: {} bytes is over the limit of {}", bytes,
                               zeros_limit);
    }
    return b_->AllocZeros(dtype, std::move(shape));
  }
  Result<Tensor> PrepareWeight(const Tensor& host, WeightUse use) override {
    return b_->PrepareWeight(host, use);
  }
  Status CopyToHost(const Tensor& src, void* dst) override { return b_->CopyToHost(src, dst); }
  Status CopyFromHost(const void* src, Tensor& dst) override { return b_->CopyFromHost(src, dst); }
  Status UploadLayout(BatchLayout& layout) override { return b_->UploadLayout(layout); }
  Status Synchronize() override { return b_->Synchronize(); }
  Result<Tensor> AllocHostStaging(DType dtype, std::vector<int64_t> shape) override {
    return b_->AllocHostStaging(dtype, std::move(shape));
  }
  Status RegisterHostMemory(void* ptr, size_t bytes) override {
    return b_->RegisterHostMemory(ptr, bytes);
  }
  void UnregisterHostMemory(void* ptr, size_t bytes) override {
    b_->UnregisterHostMemory(ptr, bytes);
  }
  Result<std::unique_ptr<RowChannel>> CreateRowChannel(int num_marks) override {
    return b_->CreateRowChannel(num_marks);
  }
  Status Embedding(const Tensor& table, const Tensor& ids, Tensor& out) override {
    return b_->Embedding(table, ids, out);
  }
  Status RmsNorm(const Tensor& x, const Tensor& w, float eps, Tensor& out) override {
    return b_->RmsNorm(x, w, eps, out);
  }
  Status Linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& out) override {
    return b_->Linear(x, w, bias, out);
  }
  Status Add(Tensor& x, const Tensor& y) override { return b_->Add(x, y); }
  Status SwiGlu(const Tensor& gate_up, Tensor& out) override { return b_->SwiGlu(gate_up, out); }
  Status Rope(Tensor& qkv, const BatchLayout& layout, const RopeParams& p) override {
    return b_->Rope(qkv, layout, p);
  }
  Status PagedAttention(const Tensor& qkv, Tensor& k_cache, Tensor& v_cache,
                        const BatchLayout& layout, const AttentionParams& p, Tensor& out) override {
    return b_->PagedAttention(qkv, k_cache, v_cache, layout, p, out);
  }
  Status GatherRows(const Tensor& table, const Tensor& rows, Tensor& out) override {
    return b_->GatherRows(table, rows, out);
  }
  Status EngramGate(const Tensor& k, const Tensor& h, const Tensor& w_key, const Tensor& w_query,
                    float eps, Tensor& v) override {
    return b_->EngramGate(k, h, w_key, w_query, eps, v);
  }
  Status EngramShortConv(const Tensor& v, const Tensor& norm_w, const Tensor& conv_w,
                         const EngramConvParams& p, const BatchLayout& layout, Tensor& state,
                         Tensor& h) override {
    return b_->EngramShortConv(v, norm_w, conv_w, p, layout, state, h);
  }
  Status ArgmaxRows(const Tensor& logits, Tensor& ids) override {
    return b_->ArgmaxRows(logits, ids);
  }

 private:
  std::unique_ptr<Backend> b_;
};

// A tier whose reads of one layer take `delay` longer (a slow device), forwarding to another.
class SlowLayerTier final : public TableTier {
 public:
  SlowLayerTier(TableTier& inner, int slow_layer, std::chrono::milliseconds delay)
      : t_(inner), slow_layer_(slow_layer), delay_(delay) {}
  std::string_view name() const override { return t_.name(); }
  int num_layers() const override { return t_.num_layers(); }
  RowFormat format() const override { return t_.format(); }
  int64_t rows(int layer) const override { return t_.rows(layer); }
  Status ReadRows(int layer, std::span<const int64_t> rows, void* dst,
                  std::span<uint8_t> failed) override {
    if (layer == slow_layer_) std::this_thread::sleep_for(delay_);
    return t_.ReadRows(layer, rows, dst, failed);
  }
  TierStats stats() const override { return t_.stats(); }
  int64_t resident_bytes() const override { return t_.resident_bytes(); }

 private:
  TableTier& t_;
  const int slow_layer_;
  const std::chrono::milliseconds delay_;
};

class CopyEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    BackendOptions bo;
    bo.threads = 1;
    auto cpu = CreateBackend(bo);
    ASSERT_TRUE(cpu.ok()) << cpu.status().ToString();
    backend_ = std::make_unique<AllocLimitBackend>(std::move(cpu).value());
    std::mt19937_64 rng(7);
    std::uniform_real_distribution<float> value(-2.f, 2.f);
    std::vector<Tensor> tables;
    for (int l = 0; l < kLayers; ++l) {
      Tensor t = HostTensor(DType::kBF16, {kRows, kDh});
      for (int64_t i = 0; i < kRows * kDh; ++i) t.ptr<uint16_t>()[i] = F32ToBf16(value(rng));
      tables.push_back(std::move(t));
    }
    HostTierOptions o;
    o.page = PageRequest::kNormal;
    auto tier = CreateHostTier({tables.begin(), tables.end()}, o);
    ASSERT_TRUE(tier.ok()) << tier.status().ToString();
    tier_ = std::move(tier).value();
    tables_ = std::move(tables);
  }

  std::unique_ptr<CopyEngine> Make(CopyEngineOptions o) {
    auto e = CopyEngine::Create(*tier_, *backend_, kHeads, o);
    EXPECT_TRUE(e.ok()) << e.status().ToString();
    return e.ok() ? std::move(e).value() : nullptr;
  }

  // Row ids for `tokens` tokens: half from a small popular set (hot-cache hits), half uniform.
  std::vector<std::vector<int64_t>> StepRows(int64_t tokens) {
    std::vector<std::vector<int64_t>> rows(kLayers);
    for (auto& layer : rows) {
      for (int64_t i = 0; i < tokens * kHeads; ++i) {
        layer.push_back(rng_() % 2 == 0 ? static_cast<int64_t>(rng_() % 16)
                                        : static_cast<int64_t>(rng_() % kRows));
      }
    }
    return rows;
  }

  // Runs one step and checks every layer's rows against the tables.
  void RunStep(CopyEngine& e, int64_t tokens) {
    std::vector<std::vector<int64_t>> rows = StepRows(tokens);
    const std::vector<std::vector<int64_t>> expect = rows;
    ASSERT_TRUE(e.Begin(std::move(rows), tokens).ok());
    for (int l = 0; l < kLayers; ++l) {
      auto got = e.WaitRows(l);
      ASSERT_TRUE(got.ok()) << got.status().ToString();
      ASSERT_EQ(got->shape, (std::vector<int64_t>{tokens, kHeads * kDh}));
      const float* out = got->ptr<float>();
      const uint16_t* table = tables_[static_cast<size_t>(l)].ptr<uint16_t>();
      for (int64_t i = 0; i < tokens * kHeads; ++i) {
        const int64_t r = expect[static_cast<size_t>(l)][static_cast<size_t>(i)];
        for (int64_t d = 0; d < kDh; ++d) {
          ASSERT_EQ(out[i * kDh + d], Bf16ToF32(table[r * kDh + d]))
              << "layer " << l << " (token, head) " << i << " row " << r;
        }
      }
    }
    std::vector<RowFailure> failures;
    ASSERT_TRUE(e.End(1e-3, &failures).ok());
    EXPECT_TRUE(failures.empty());
  }

  std::unique_ptr<AllocLimitBackend> backend_;
  std::unique_ptr<TableTier> tier_;
  std::vector<Tensor> tables_;
  std::mt19937_64 rng_{11};
};

TEST_F(CopyEngineTest, RowsEqualTheTablesInEveryMode) {
  for (const TransferMode transfer : {TransferMode::kCopy, TransferMode::kZeroCopy}) {
    for (const bool prefetch : {true, false}) {
      for (const uint64_t hot : {uint64_t{0}, uint64_t{kLayers * 32 * kDh * 2}}) {
        SCOPED_TRACE(::testing::Message()
                     << (transfer == TransferMode::kCopy ? "copy" : "zero_copy")
                     << (prefetch ? ", prefetch" : ", synchronous") << ", hot cache " << hot);
        CopyEngineOptions o;
        o.transfer = transfer;
        o.prefetch = prefetch;
        o.hot_cache_bytes = hot;
        auto e = Make(o);
        ASSERT_NE(e, nullptr);
        for (const int64_t tokens : {5, 70, 3, 200, 1, 200}) {  // grows past 64, then 140
          ASSERT_NO_FATAL_FAILURE(RunStep(*e, tokens));
        }
        const OverlapStats s = e->stats();
        ASSERT_EQ(s.layers.size(), static_cast<size_t>(kLayers));
        EXPECT_EQ(s.layers[0].steps, 6u);
        EXPECT_EQ(s.layers[0].rows_requested, (5u + 70 + 3 + 200 + 1 + 200) * kHeads);
        if (hot > 0) {
          EXPECT_GT(s.layers[0].hot_hits, 0u);
        } else {
          EXPECT_EQ(s.layers[0].hot_hits, 0u);
        }
      }
    }
  }
}

TEST_F(CopyEngineTest, AStepWhoseBuffersCannotBeAllocatedFailsAlone) {
  CopyEngineOptions o;
  o.hot_cache_bytes = kLayers * 32 * kDh * 2;
  auto e = Make(o);
  ASSERT_NE(e, nullptr);
  ASSERT_NO_FATAL_FAILURE(RunStep(*e, 10));  // buffers for 64 tokens; hot rows admitted
  // 2000 tokens need 2 x 2000 x 4 rows of 16 bytes per layer's arena: over the limit.
  backend_->zeros_limit = 100 << 10;
  const Status s = e->Begin(StepRows(2000), 2000);
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted) << s.ToString();
  // Smaller steps run again, on buffers allocated anew: no partial arena, no hot-cache entry
  // pointing into freed memory.
  for (const int64_t tokens : {10, 64, 3}) ASSERT_NO_FATAL_FAILURE(RunStep(*e, tokens));
  backend_->zeros_limit = std::numeric_limits<size_t>::max();
  ASSERT_NO_FATAL_FAILURE(RunStep(*e, 2000));
}

TEST_F(CopyEngineTest, ALayersTransferTimeIsItsOwn) {
  // Layer 1's reads take 300 ms. The copy thread issues layer 1 before it waits for layer 0,
  // but layer 0's transfer time must not include layer 1's read (nor its latency).
  SlowLayerTier slow(*tier_, 1, std::chrono::milliseconds(300));
  auto e = CopyEngine::Create(slow, *backend_, kHeads, {});
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  std::vector<std::vector<int64_t>> rows = StepRows(8);
  ASSERT_TRUE((*e)->Begin(std::move(rows), 8).ok());
  for (int l = 0; l < kLayers; ++l) ASSERT_TRUE((*e)->WaitRows(l).ok());
  ASSERT_TRUE((*e)->End(1.0, nullptr).ok());
  const OverlapStats s = (*e)->stats();
  EXPECT_GE(s.layers[1].transfer_s, 0.3);
  EXPECT_LT(s.layers[0].transfer_s, 0.15) << "layer 0 was charged layer 1's read";
  EXPECT_LT(s.layers[0].latency_sum_s, 0.15);
}

}  // namespace
}  // namespace engram
