// Small DeepSeek-V4.1-layout models for the config, weights and model-files tests, built from
// ExpectedTensors alone (no synth presets): every tensor zero-filled, in the dtype asked for,
// the F8_E8M0 scales present exactly where their tensor is F8_E4M3.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/config.h"
#include "model/safetensors.h"
#include "model/weights.h"

namespace engram::testutil {

// config.json of a 3-layer, 64-wide Llama (vocab 512) with V4.1 Engram at layer 1: N = 3,
// engram_vocab_size 1000, 4 heads of 32 values (wkv [128, 256], wkv.scale [4, 8]).
inline nlohmann::json V41ConfigJson() {
  return nlohmann::json{{"model_type", "llama"},      {"hidden_size", 64},
                        {"intermediate_size", 160},   {"num_hidden_layers", 3},
                        {"num_attention_heads", 4},   {"num_key_value_heads", 2},
                        {"vocab_size", 512},          {"engram_layer_ids", {1}},
                        {"engram_max_ngram_size", 3}, {"engram_vocab_size", 1000},
                        {"engram_n_heads", 4},        {"engram_head_dim", 32},
                        {"engram_pad_token_id", 2},   {"engram_compressed_vocab_size", 512}};
}

inline ModelConfig ParseConfig(const nlohmann::json& j) {
  auto c = ModelConfig::FromJson(j, "config.json");
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return c.ok() ? *c : ModelConfig{};
}

// The dtype of each tensor ExpectedTensors lists for `config`: `table` for the Engram tables,
// `wkv` for wkv, F8_E8M0 for the scales of F8_E4M3 tensors (the others are left out), BF16
// for the rest.
struct PlannedModelTensor {
  ExpectedTensor spec;
  DType dtype;
};

inline std::vector<PlannedModelTensor> PlanTensors(const ModelConfig& config, DType table,
                                                   DType wkv) {
  auto expected = ExpectedTensors(config);
  EXPECT_TRUE(expected.ok()) << expected.status().ToString();
  std::vector<PlannedModelTensor> out;
  std::map<std::string, DType> dtype_of;
  for (const ExpectedTensor& e : expected.ok() ? *expected : std::vector<ExpectedTensor>{}) {
    DType dt = DType::kBF16;
    if (e.role == TensorRole::kEngramTable) dt = table;
    if (e.role == TensorRole::kEngramWkv) dt = wkv;
    if (e.role == TensorRole::kEngramScale) {
      if (dtype_of[e.scale_of] != DType::kF8E4M3) continue;
      dt = DType::kF8E8M0;
    }
    dtype_of[e.name] = dt;
    out.push_back({e, dt});
  }
  return out;
}

// In memory.
inline TensorStore StoreFor(const ModelConfig& config, DType table = DType::kF8E4M3,
                            DType wkv = DType::kF8E4M3) {
  TensorStore store;
  for (const PlannedModelTensor& t : PlanTensors(config, table, wkv)) {
    store.AddInMemory(t.spec.name, HostTensor(t.dtype, t.spec.shape));
  }
  return store;
}

// A model directory: config.json and model.safetensors (zeros).
inline void WriteModelDir(const ModelConfig& config, const std::string& dir,
                          DType table = DType::kF8E4M3, DType wkv = DType::kF8E4M3) {
  {
    std::ofstream out(dir + "/config.json");
    out << config.ToJson().dump(2);
  }
  std::vector<SafetensorsWriter::Spec> specs;
  uint64_t total = 0;
  for (const PlannedModelTensor& t : PlanTensors(config, table, wkv)) {
    specs.push_back({t.spec.name, t.dtype, t.spec.shape});
    uint64_t n = DTypeSize(t.dtype);
    for (int64_t d : t.spec.shape) n *= static_cast<uint64_t>(d);
    total += n;
  }
  auto writer = SafetensorsWriter::Create(dir + "/model.safetensors", specs);
  ASSERT_TRUE(writer.ok()) << writer.status().ToString();
  const std::vector<char> zeros(1 << 20, 0);
  for (uint64_t done = 0; done < total;) {
    const uint64_t n = std::min<uint64_t>(zeros.size(), total - done);
    ASSERT_TRUE((*writer)->Append(zeros.data(), n).ok());
    done += n;
  }
  ASSERT_TRUE((*writer)->Finish().ok());
}

}  // namespace engram::testutil
