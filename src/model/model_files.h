// OpenModel: everything a model spec names, opened and validated: the config, the tensors
// (memory-mapped, or synthesized in memory), the Engram compression map and the tokenizer.
#pragma once

#include <memory>
#include <string>

#include "common/status.h"
#include "model/config.h"
#include "model/safetensors.h"
#include "text/chat_template.h"
#include "text/compression_map.h"

namespace engram {

struct ModelFiles {
  ModelConfig config;
  TensorStore store;
  // Raw token id -> compressed id; covers [0, config.vocab_size).
  CompressionMap compression;
  std::string tokenizer_path;  // tokenizer.json, empty if none
  // The chat template of the tokenizer_config.json beside tokenizer_path; null if none.
  std::shared_ptr<const ChatTemplate> chat_template;
  std::string source;  // the spec, for messages
  std::string dir;     // the model directory; empty for synth: models
};

// `spec` is a model directory (config.json, *.safetensors [+ index], optional tokenizer.json
// and engram_compression.json) or
// "synth:PRESET[?seed=S&dtype=bf16|f32&tables=bf16|f32|fp8&table_gb=X& tokenizer=PATH]"
// (SynthesizeInMemory). The compression map is engram_compression.json when present, else computed
// natively from tokenizer.json by the reference's rules, else the identity over vocab_size. A
// compression map with fewer entries than vocab_size (a tokenizer smaller than the padded
// embedding) is extended: the extra ids map to the compressed pad id, num_compressed is unchanged
// (hashes of real tokens stay exact). A V4.1 config (engram_compressed_vocab_size) is refused
// unless the map has exactly that many compressed ids, naming both numbers and the map's origin.
// Errors name the file or the spec parameter.
Result<ModelFiles> OpenModel(const std::string& spec);

// The chat template of the tokenizer_config.json beside `tokenizer_path` (null when there is
// no such file, or it has no chat_template); errors name the file.
Result<std::shared_ptr<const ChatTemplate>> ChatTemplateBeside(const std::string& tokenizer_path);

}  // namespace engram
