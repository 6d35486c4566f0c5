#include "model/rope.h"

#include <cmath>
#include <numbers>

namespace engram {

std::vector<float> RopeInvFreq(const ModelConfig& c) {
  const int64_t dim = c.head_dim;
  std::vector<float> inv(static_cast<size_t>(dim / 2));
  for (int64_t i = 0; i < dim / 2; ++i) {
    const float expo = static_cast<float>(2 * i) / static_cast<float>(dim);
    inv[static_cast<size_t>(i)] = 1.0f / std::pow(static_cast<float>(c.rope_theta), expo);
  }
  if (!c.rope_scaling) return inv;
  const RopeScaling& s = *c.rope_scaling;
  const float factor = static_cast<float>(s.factor);
  if (s.rope_type == "linear") {
    for (float& f : inv) f /= factor;
  } else if (s.rope_type == "llama3") {
    const float old_ctx = static_cast<float>(s.original_max_position_embeddings);
    const float low = static_cast<float>(s.low_freq_factor);
    const float high = static_cast<float>(s.high_freq_factor);
    const float low_wavelen = old_ctx / low;
    const float high_wavelen = old_ctx / high;
    for (float& f : inv) {
      const float wavelen = 2.0f * std::numbers::pi_v<float> / f;
      if (wavelen > low_wavelen) {
        f = f / factor;
      } else if (wavelen >= high_wavelen) {
        const float smooth = (old_ctx / wavelen - low) / (high - low);
        f = (1.0f - smooth) * f / factor + smooth * f;
      }
    }
  }
  return inv;
}

}  // namespace engram
