#include "model/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace engram {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Candidate order: larger logit first, then lower id (a strict total order on distinct ids).
bool Better(const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
  return a.first > b.first || (a.first == b.first && a.second < b.second);
}

}  // namespace

Status SamplingParams::Validate() const {
  if (!(temperature >= 0.f) || !std::isfinite(temperature)) {
    return InvalidArgument("temperature = {} must be >= 0", temperature);
  }
  if (top_k < 0) return InvalidArgument("top_k = {} must be >= 0 (0 disables it)", top_k);
  if (!(top_p > 0.f && top_p <= 1.f)) return InvalidArgument("top_p = {} must be in (0, 1]", top_p);
  if (!(min_p >= 0.f && min_p < 1.f)) return InvalidArgument("min_p = {} must be in [0, 1)", min_p);
  if (!(repetition_penalty > 0.f) || !std::isfinite(repetition_penalty)) {
    return InvalidArgument("repetition_penalty = {} must be > 0 (1 disables it)",
                           repetition_penalty);
  }
  if (!(presence_penalty >= -kMaxAbsPenalty && presence_penalty <= kMaxAbsPenalty)) {
    return InvalidArgument("presence_penalty = {} must be in [-2, 2]", presence_penalty);
  }
  if (!(frequency_penalty >= -kMaxAbsPenalty && frequency_penalty <= kMaxAbsPenalty)) {
    return InvalidArgument("frequency_penalty = {} must be in [-2, 2]", frequency_penalty);
  }
  if (logprobs < 0 || logprobs > kMaxLogprobs) {
    return InvalidArgument("logprobs = {} must be in [0, {}]", logprobs, kMaxLogprobs);
  }
  return Status::Ok();
}

int32_t Argmax(std::span<const float> logits) {
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

bool LogitsUsable(std::span<const float> logits) {
  if (logits.empty()) return false;
  bool nan = false;
  float mx = -std::numeric_limits<float>::infinity();
  for (const float x : logits) {
    nan |= x != x;
    mx = x > mx ? x : mx;
  }
  return !nan && std::isfinite(mx);
}

int32_t GreedyToken(std::span<const float> logits) {
  return LogitsUsable(logits) ? Argmax(logits) : kNoGreedyToken;
}

Sampler::Seen& Sampler::Slot(int32_t token) {
  auto [it, inserted] = slot_of_.try_emplace(token, static_cast<uint32_t>(seen_.size()));
  if (inserted) seen_.push_back({token, false, 0});
  return seen_[it->second];
}

void Sampler::SetPrompt(std::span<const int32_t> prompt) {
  if (!seen_.empty()) {  // drop the previous prompt, keep output counts
    size_t w = 0;
    for (const Seen& s : seen_) {
      if (s.count > 0) seen_[w++] = {s.token, false, s.count};
    }
    seen_.resize(w);
    slot_of_.clear();
    for (size_t i = 0; i < seen_.size(); ++i) {
      slot_of_.emplace(seen_[i].token, static_cast<uint32_t>(i));
    }
  }
  if (p_.repetition_penalty == 1.f) return;  // only the repetition penalty reads the prompt
  for (int32_t t : prompt) Slot(t).in_prompt = true;
}

void Sampler::Accept(int32_t token) {
  ++output_tokens_;
  if (p_.has_penalties()) ++Slot(token).count;
}

std::span<const float> Sampler::Penalized(std::span<const float> logits) {
  if (!p_.has_penalties() || seen_.empty()) return logits;
  work_.assign(logits.begin(), logits.end());
  const float rep = p_.repetition_penalty;
  for (const Seen& s : seen_) {
    if (s.token < 0 || static_cast<size_t>(s.token) >= work_.size()) continue;
    float v = work_[static_cast<size_t>(s.token)];
    if (rep != 1.f) v = v > 0.f ? v / rep : v * rep;  // every entry is in prompt or output
    if (s.count > 0) {
      v -= p_.presence_penalty + p_.frequency_penalty * static_cast<float>(s.count);
    }
    work_[static_cast<size_t>(s.token)] = v;
  }
  return work_;
}

void Sampler::SortPrefix(size_t m) {
  if (m <= sorted_) return;
  std::partial_sort(cand_.begin() + static_cast<ptrdiff_t>(sorted_),
                    cand_.begin() + static_cast<ptrdiff_t>(m), cand_.end(), Better);
  sorted_ = m;
}

int32_t Sampler::Draw(std::span<const float> x) {
  const size_t vocab = x.size();
  cand_.resize(vocab);
  float mx = kNegInf;
  for (size_t i = 0; i < vocab; ++i) {
    float v = x[i] / p_.temperature;
    if (std::isnan(v)) v = kNegInf;
    cand_[i] = {v, static_cast<int32_t>(i)};
    mx = std::max(mx, v);
  }
  if (!std::isfinite(mx)) return Argmax(x);  // all -inf, or +inf present: nothing to weigh
  weight_.resize(vocab);
  for (size_t i = 0; i < vocab; ++i) {
    weight_[i] = std::exp(static_cast<double>(cand_[i].first) - static_cast<double>(mx));
  }
  auto w = [&](size_t i) { return weight_[static_cast<size_t>(cand_[i].second)]; };

  // The candidate set is either the sorted prefix cand_[0, keep) (top_k / top_p) or, with
  // neither, every token in id order; min_p (weights are relative to the best, which is 1)
  // cuts the prefix, or filters in id order.
  sorted_ = 0;
  size_t n = vocab;
  bool prefix = false;
  if (p_.top_k > 0 && static_cast<size_t>(p_.top_k) < vocab) {
    n = static_cast<size_t>(p_.top_k);
    SortPrefix(n);
    prefix = true;
  }
  size_t keep = n;
  if (p_.top_p < 1.f) {
    double total = 0;
    if (prefix) {
      for (size_t i = 0; i < n; ++i) total += w(i);
    } else {
      for (double v : weight_) total += v;
    }
    // Smallest sorted prefix whose mass reaches top_p; sort only as far as needed.
    const double target = static_cast<double>(p_.top_p) * total;
    double cum = 0;
    size_t i = 0;
    for (size_t m = std::min<size_t>(n, 64);; m = std::min(n, m * 8)) {
      SortPrefix(m);
      for (; i < m && cum < target; ++i) cum += w(i);
      if (cum >= target || m == n) break;
    }
    keep = std::max<size_t>(i, 1);
    prefix = true;
  }
  const double min_w = static_cast<double>(p_.min_p);
  if (prefix && p_.min_p > 0.f) {
    for (size_t i = 1; i < keep; ++i) {
      if (w(i) < min_w) {
        keep = i;
        break;
      }
    }
  }

  double kept = 0;
  if (prefix) {
    for (size_t i = 0; i < keep; ++i) kept += w(i);
  } else {
    for (double v : weight_) kept += v >= min_w ? v : 0.0;
  }
  std::uniform_real_distribution<double> u(0.0, kept);
  double r = u(rng_);
  int32_t last = -1;  // the last candidate with weight, against rounding at the end
  if (prefix) {
    for (size_t i = 0; i < keep; ++i) {
      const double v = w(i);
      if (v <= 0) continue;
      if (r < v) return cand_[i].second;
      r -= v;
      last = cand_[i].second;
    }
  } else {
    for (size_t i = 0; i < vocab; ++i) {
      const double v = weight_[i];
      if (v <= 0 || v < min_w) continue;
      if (r < v) return static_cast<int32_t>(i);
      r -= v;
      last = static_cast<int32_t>(i);
    }
  }
  return last >= 0 ? last : Argmax(x);
}

int32_t Sampler::Choose(std::span<const float> x) {
  return p_.temperature == 0.f ? Argmax(x) : Draw(x);
}

int32_t Sampler::Sample(std::span<const float> logits) {
  if (logits.empty()) return -1;
  const int32_t token = Choose(Penalized(logits));
  Accept(token);
  return token;
}

SampleResult Sampler::SampleWithLogprobs(std::span<const float> logits, int top_n) {
  const std::span<const float> x = Penalized(logits);
  SampleResult res;
  if (x.empty()) return res;  // token -1: nothing to sample from
  res.token = Choose(x);
  // log_softmax(x), max-shifted, double accumulation.
  float mx = kNegInf;
  for (float v : x) {
    if (v > mx) mx = v;  // NaN never wins
  }
  double lse = mx;
  if (std::isfinite(mx)) {
    double sum = 0;
    for (float v : x) sum += std::exp(static_cast<double>(v) - static_cast<double>(mx));
    lse = static_cast<double>(mx) + std::log(sum);
  }
  auto logprob = [&](float v) { return static_cast<float>(static_cast<double>(v) - lse); };
  res.logprob = logprob(x[static_cast<size_t>(res.token)]);

  // Top n by logit: one pass keeping a small sorted list (ids arrive in increasing order,
  // so a later equal logit never displaces an earlier one).
  const size_t n =
      static_cast<size_t>(std::clamp<int64_t>(top_n, 0, static_cast<int64_t>(x.size())));
  res.top.reserve(n);
  for (size_t i = 0; i < x.size() && n > 0; ++i) {
    const float v = std::isnan(x[i]) ? kNegInf : x[i];
    if (res.top.size() == n) {
      if (!(v > res.top.back().second)) continue;
      res.top.pop_back();
    }
    auto pos = std::find_if(res.top.begin(), res.top.end(),
                            [v](const std::pair<int32_t, float>& e) { return v > e.second; });
    res.top.insert(pos, {static_cast<int32_t>(i), v});
  }
  for (auto& e : res.top) e.second = logprob(e.second);
  Accept(res.token);
  return res;
}

}  // namespace engram
