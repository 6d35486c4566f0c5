#include "model/sampler.h"

#include <algorithm>
#include <cmath>

namespace engram {

Status SamplingParams::Validate() const {
  if (!(temperature >= 0.f) || !std::isfinite(temperature)) {
    return InvalidArgument("temperature = {} must be >= 0", temperature);
  }
  if (top_k < 0) return InvalidArgument("top_k = {} must be >= 0 (0 disables it)", top_k);
  if (!(top_p > 0.f && top_p <= 1.f)) return InvalidArgument("top_p = {} must be in (0, 1]", top_p);
  if (!(min_p >= 0.f && min_p < 1.f)) return InvalidArgument("min_p = {} must be in [0, 1)", min_p);
  return Status::Ok();
}

int32_t Argmax(std::span<const float> logits) {
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

int32_t Sampler::Sample(std::span<const float> logits) {
  if (p_.temperature == 0.f) return Argmax(logits);
  cand_.clear();
  cand_.reserve(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) {
    cand_.emplace_back(logits[i] / p_.temperature, static_cast<int32_t>(i));
  }
  auto by_logit = [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  size_t n = cand_.size();
  if (p_.top_k > 0 && static_cast<size_t>(p_.top_k) < n) {
    n = static_cast<size_t>(p_.top_k);
    std::partial_sort(cand_.begin(), cand_.begin() + static_cast<ptrdiff_t>(n), cand_.end(),
                      by_logit);
  } else {
    std::sort(cand_.begin(), cand_.end(), by_logit);
  }
  const float max_logit = cand_[0].first;
  std::vector<double> probs(n);
  double total = 0;
  for (size_t i = 0; i < n; ++i) {
    probs[i] = std::exp(static_cast<double>(cand_[i].first - max_logit));
    total += probs[i];
  }
  // min_p: keep tokens whose probability is at least min_p times the top one.
  size_t keep = n;
  if (p_.min_p > 0.f) {
    for (size_t i = 1; i < n; ++i) {
      if (probs[i] < p_.min_p * probs[0]) {
        keep = i;
        break;
      }
    }
  }
  // top_p: smallest prefix whose mass reaches top_p.
  if (p_.top_p < 1.f) {
    double cum = 0;
    for (size_t i = 0; i < keep; ++i) {
      cum += probs[i] / total;
      if (cum >= p_.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  double kept = 0;
  for (size_t i = 0; i < keep; ++i) kept += probs[i];
  std::uniform_real_distribution<double> u(0.0, kept);
  double r = u(rng_);
  for (size_t i = 0; i < keep; ++i) {
    r -= probs[i];
    if (r <= 0) return cand_[i].second;
  }
  return cand_[keep - 1].second;
}

}  // namespace engram
