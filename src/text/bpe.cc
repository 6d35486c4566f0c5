#include "text/bpe.h"

#include "text/vocab_limits.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <mutex>
#include <unordered_map>

#include "text/byte_level.h"
#include "text/utf8.h"

namespace engram {
namespace {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using StringIdMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

// Open-addressing map from a symbol pair (a, b) to the merge's (rank, new id).
class MergeMap {
 public:
  struct Merge {
    uint32_t rank;
    int32_t new_id;
  };

  void Reserve(size_t n) {
    size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    slots_.assign(cap, Slot{kEmpty, {0, 0}});
    mask_ = cap - 1;
  }
  // Later entries replace earlier ones with the same pair (as HF's HashMap collect).
  void Put(int32_t a, int32_t b, Merge m) {
    const uint64_t key = Key(a, b);
    for (size_t i = Hash(key);; i = (i + 1) & mask_) {
      if (slots_[i].key == kEmpty || slots_[i].key == key) {
        slots_[i] = Slot{key, m};
        return;
      }
    }
  }
  const Merge* Find(int32_t a, int32_t b) const {
    const uint64_t key = Key(a, b);
    for (size_t i = Hash(key);; i = (i + 1) & mask_) {
      if (slots_[i].key == key) return &slots_[i].merge;
      if (slots_[i].key == kEmpty) return nullptr;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  struct Slot {
    uint64_t key;
    Merge merge;
  };
  static uint64_t Key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  size_t Hash(uint64_t key) const {
    return static_cast<size_t>((key * 0x9E3779B97F4A7C15ULL) >> 20) & mask_;
  }
  std::vector<Slot> slots_;
  size_t mask_ = 0;
};

// A bounded cache of encoded pieces, sharded to keep lock hold times short under
// concurrent Encode calls. A full shard is cleared (the cache only saves work).
class PieceCache {
 public:
  static constexpr size_t kMaxKeyBytes = 256;

  bool Lookup(std::string_view key, std::vector<int32_t>* ids) const {
    const Shard& s = shards_[ShardOf(key)];
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.map.find(key);
    if (it == s.map.end()) return false;
    ids->insert(ids->end(), it->second.begin(), it->second.end());
    return true;
  }
  void Insert(std::string_view key, const int32_t* ids, size_t n) const {
    if (key.size() >= kMaxKeyBytes) return;
    Shard& s = shards_[ShardOf(key)];
    std::lock_guard<std::mutex> lock(s.mu);
    if (s.map.size() >= kMaxPerShard) s.map.clear();
    s.map.try_emplace(std::string(key), ids, ids + n);
  }

 private:
  static constexpr size_t kShards = 16;
  static constexpr size_t kMaxPerShard = 8192;
  struct Shard {
    mutable std::mutex mu;
    std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> map;
  };
  static size_t ShardOf(std::string_view key) { return StringHash{}(key) % kShards; }
  mutable std::array<Shard, kShards> shards_;
};

struct Symbol {
  int32_t id;
  int32_t prev;
  int32_t next;
  bool removed;
};

struct QueuedMerge {
  uint32_t rank;
  int32_t pos;
  int32_t new_id;
};

// Min-heap order: lowest rank first, then leftmost position.
struct LaterMerge {
  bool operator()(const QueuedMerge& x, const QueuedMerge& y) const {
    return x.rank != y.rank ? x.rank > y.rank : x.pos > y.pos;
  }
};

}  // namespace

struct BpeModel::Impl {
  StringIdMap vocab;
  std::vector<std::string> id_to_token;
  MergeMap merges;
  std::array<int32_t, 256> byte_ids{};  // id of each byte's byte-level character, or -1
  bool all_bytes_known = false;
  int32_t unk_id = -1;
  bool fuse_unk = false;
  bool byte_fallback = false;
  bool ignore_merges = false;
  std::string prefix;  // continuing_subword_prefix
  std::string suffix;  // end_of_word_suffix
  PieceCache cache;

  int32_t Find(std::string_view s) const {
    auto it = vocab.find(s);
    return it == vocab.end() ? -1 : it->second;
  }
  void InitialSymbols(std::string_view word, std::vector<Symbol>* syms) const;
  void MergeAll(std::vector<Symbol>* syms) const;
};

namespace {

void PushSymbol(std::vector<Symbol>* syms, int32_t id) {
  const auto n = static_cast<int32_t>(syms->size());
  syms->push_back(Symbol{id, n - 1, n + 1, false});
}

}  // namespace

// HF's BPE::merge_word before merging: one symbol per character (with the subword prefix
// and word suffix), unknown characters as byte-fallback tokens or (fused) unk.
void BpeModel::Impl::InitialSymbols(std::string_view w, std::vector<Symbol>* syms) const {
  int32_t pending_unk = -1;
  size_t pos = 0;
  std::string s;
  while (pos < w.size()) {
    const size_t start = pos;
    utf8::Next(w, &pos);
    const bool is_first = start == 0, is_last = pos == w.size();
    s.assign(w.substr(start, pos - start));
    if (!is_first && !prefix.empty()) s.insert(0, prefix);
    if (is_last && !suffix.empty()) s.append(suffix);
    const int32_t id = Find(s);
    if (id >= 0) {
      if (pending_unk >= 0) {
        PushSymbol(syms, pending_unk);
        pending_unk = -1;
      }
      PushSymbol(syms, id);
      continue;
    }
    if (byte_fallback) {
      std::vector<int32_t> bytes;
      for (char c : s) {
        const int32_t b = Find(fmt::format("<0x{:02X}>", static_cast<uint8_t>(c)));
        if (b < 0) break;
        bytes.push_back(b);
      }
      if (bytes.size() == s.size()) {
        for (int32_t b : bytes) PushSymbol(syms, b);
        continue;
      }
    }
    if (unk_id >= 0) {
      if (pending_unk >= 0 && !fuse_unk) PushSymbol(syms, pending_unk);
      pending_unk = unk_id;
    }
  }
  if (pending_unk >= 0) PushSymbol(syms, pending_unk);
  if (!syms->empty()) syms->back().next = -1;
}

// HF's Word::merge_all: repeatedly merges the lowest-rank adjacent pair (leftmost first).
void BpeModel::Impl::MergeAll(std::vector<Symbol>* syms_ptr) const {
  std::vector<Symbol>& syms = *syms_ptr;
  thread_local std::vector<QueuedMerge> heap;
  heap.clear();
  const auto n = static_cast<int32_t>(syms.size());
  for (int32_t i = 0; i + 1 < n; ++i) {
    if (const MergeMap::Merge* m = merges.Find(syms[i].id, syms[i + 1].id)) {
      heap.push_back({m->rank, i, m->new_id});
    }
  }
  std::make_heap(heap.begin(), heap.end(), LaterMerge{});
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), LaterMerge{});
    const QueuedMerge top = heap.back();
    heap.pop_back();
    Symbol& left = syms[static_cast<size_t>(top.pos)];
    if (left.removed || left.next < 0) continue;
    const int32_t right_pos = left.next;
    const Symbol right = syms[static_cast<size_t>(right_pos)];
    const MergeMap::Merge* current = merges.Find(left.id, right.id);
    if (current == nullptr || current->new_id != top.new_id) continue;  // stale entry
    left.id = top.new_id;
    left.next = right.next;
    syms[static_cast<size_t>(right_pos)].removed = true;
    if (right.next >= 0) syms[static_cast<size_t>(right.next)].prev = top.pos;
    if (left.prev >= 0) {
      if (const MergeMap::Merge* m =
              merges.Find(syms[static_cast<size_t>(left.prev)].id, left.id)) {
        heap.push_back({m->rank, left.prev, m->new_id});
        std::push_heap(heap.begin(), heap.end(), LaterMerge{});
      }
    }
    if (left.next >= 0) {
      if (const MergeMap::Merge* m =
              merges.Find(left.id, syms[static_cast<size_t>(left.next)].id)) {
        heap.push_back({m->rank, top.pos, m->new_id});
        std::push_heap(heap.begin(), heap.end(), LaterMerge{});
      }
    }
  }
}

BpeModel::BpeModel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
BpeModel::~BpeModel() = default;
BpeModel::BpeModel(BpeModel&&) noexcept = default;
BpeModel& BpeModel::operator=(BpeModel&&) noexcept = default;

Result<BpeModel> BpeModel::FromJson(const nlohmann::json& m) {
  auto impl = std::make_unique<Impl>();
  auto vocab_it = m.find("vocab");
  if (vocab_it == m.end() || !vocab_it->is_object()) {
    return InvalidArgument("model: BPE needs an object \"vocab\" (token -> id)");
  }
  int32_t max_id = -1;
  impl->vocab.reserve(vocab_it->size());
  for (const auto& [token, id] : vocab_it->items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= kMaxVocab) {
      return InvalidArgument("model.vocab[\"{}\"]: expected an integer id in [0, {})", token,
                             kMaxVocab);
    }
    const auto v = static_cast<int32_t>(id.get<int64_t>());
    impl->vocab[token] = v;
    max_id = std::max(max_id, v);
  }
  impl->id_to_token.resize(static_cast<size_t>(max_id + 1));
  for (const auto& [token, id] : impl->vocab) impl->id_to_token[static_cast<size_t>(id)] = token;

  auto str_or_empty = [&](const char* key) -> Result<std::string> {
    auto it = m.find(key);
    if (it == m.end() || it->is_null()) return std::string();
    if (!it->is_string()) return InvalidArgument("model.{}: expected a string or null", key);
    return it->get<std::string>();
  };
  ENGRAM_ASSIGN_OR_RETURN(impl->prefix, str_or_empty("continuing_subword_prefix"));
  ENGRAM_ASSIGN_OR_RETURN(impl->suffix, str_or_empty("end_of_word_suffix"));
  ENGRAM_ASSIGN_OR_RETURN(std::string unk, str_or_empty("unk_token"));
  if (!unk.empty()) {
    impl->unk_id = impl->Find(unk);
    if (impl->unk_id < 0) return InvalidArgument("model.unk_token \"{}\" is not in the vocab", unk);
  }
  impl->fuse_unk = m.value("fuse_unk", false);
  impl->byte_fallback = m.value("byte_fallback", false);
  impl->ignore_merges = m.value("ignore_merges", false);
  if (auto d = m.find("dropout"); d != m.end() && d->is_number() && d->get<double>() > 0.0) {
    return Unimplemented("model.dropout = {}: BPE dropout is not supported", d->get<double>());
  }

  auto merges_it = m.find("merges");
  if (merges_it == m.end() || !merges_it->is_array()) {
    return InvalidArgument("model: BPE needs an array \"merges\"");
  }
  impl->merges.Reserve(merges_it->size());
  uint32_t rank = 0;
  for (size_t i = 0; i < merges_it->size(); ++i) {
    const auto& e = (*merges_it)[i];
    std::string a, b;
    if (e.is_string()) {
      const std::string& line = e.get_ref<const std::string&>();
      if (line.rfind("#version", 0) == 0) continue;
      const size_t sp = line.find(' ');
      if (sp == std::string::npos || line.find(' ', sp + 1) != std::string::npos) {
        return InvalidArgument(
            "model.merges[{}] = \"{}\": expected two tokens separated by one space", i, line);
      }
      a = line.substr(0, sp);
      b = line.substr(sp + 1);
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
      a = e[0].get<std::string>();
      b = e[1].get<std::string>();
    } else {
      return InvalidArgument("model.merges[{}]: expected \"a b\" or [\"a\", \"b\"]", i);
    }
    const int32_t a_id = impl->Find(a), b_id = impl->Find(b);
    if (a_id < 0 || b_id < 0) {
      return InvalidArgument("model.merges[{}]: token \"{}\" is not in the vocab", i,
                             a_id < 0 ? a : b);
    }
    // As HF: the right part loses prefix-length bytes (its continuing_subword_prefix).
    std::string merged = a;
    merged.append(b, std::min(impl->prefix.size(), b.size()), std::string::npos);
    const int32_t new_id = impl->Find(merged);
    if (new_id < 0) {
      return InvalidArgument("model.merges[{}]: merged token \"{}\" is not in the vocab", i,
                             merged);
    }
    impl->merges.Put(a_id, b_id, MergeMap::Merge{rank++, new_id});
  }

  const ByteLevelMap& bl = ByteLevelMap::Get();
  impl->all_bytes_known = true;
  for (int b = 0; b < 256; ++b) {
    impl->byte_ids[static_cast<size_t>(b)] = impl->Find(bl.Char(static_cast<uint8_t>(b)));
    if (impl->byte_ids[static_cast<size_t>(b)] < 0) impl->all_bytes_known = false;
  }
  return BpeModel(std::move(impl));
}

void BpeModel::Encode(std::string_view piece, bool byte_level, std::vector<int32_t>* ids) const {
  const Impl& m = *impl_;
  if (piece.empty()) return;
  std::string mapped;
  std::string_view word = piece;
  if (byte_level &&
      (m.ignore_merges || !m.all_bytes_known || !m.prefix.empty() || !m.suffix.empty())) {
    ByteLevelMap::Get().Encode(piece, &mapped);
    word = mapped;
  }
  if (m.ignore_merges) {
    if (const int32_t id = m.Find(word); id >= 0) {
      ids->push_back(id);
      return;
    }
  }
  if (m.cache.Lookup(piece, ids)) return;

  thread_local std::vector<Symbol> syms;
  syms.clear();
  if (byte_level && word.data() == piece.data()) {
    // Fast path: every byte is a known byte-level symbol.
    for (char c : piece) PushSymbol(&syms, m.byte_ids[static_cast<uint8_t>(c)]);
    syms.back().next = -1;
  } else {
    m.InitialSymbols(word, &syms);
  }
  if (syms.size() > 1) m.MergeAll(&syms);

  const size_t first = ids->size();
  for (const Symbol& s : syms) {
    if (!s.removed) ids->push_back(s.id);
  }
  m.cache.Insert(piece, ids->data() + first, ids->size() - first);
}

int32_t BpeModel::TokenToId(std::string_view token) const { return impl_->Find(token); }

std::string_view BpeModel::IdToToken(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= impl_->id_to_token.size()) return {};
  return impl_->id_to_token[static_cast<size_t>(id)];
}

int32_t BpeModel::id_limit() const { return static_cast<int32_t>(impl_->id_to_token.size()); }

}  // namespace engram
