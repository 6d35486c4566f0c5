// vLLM's histogram bucket boundaries (its V1 engine's PrometheusStatLogger,
// vllm/v1/metrics/loggers.py), so engramd's engram_ histograms aggregate, quantile and alert as
// vLLM's vllm: ones do. The upper bounds only: +Inf is implied after the last.
#pragma once

#include <cstdint>
#include <vector>

namespace engram::vllm_buckets {

// time_to_first_token_seconds.
inline const std::vector<double>& TimeToFirstToken() {
  static const std::vector<double> b = {0.001, 0.005, 0.01, 0.02,  0.04,  0.06,  0.08, 0.1,
                                        0.25,  0.5,   0.75, 1.0,   2.5,   5.0,   7.5,  10.0,
                                        20.0,  40.0,  80.0, 160.0, 640.0, 2560.0};
  return b;
}

// inter_token_latency_seconds and request_time_per_output_token_seconds.
inline const std::vector<double>& TimePerOutputToken() {
  static const std::vector<double> b = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,  0.3,  0.4, 0.5,
                                        0.75, 1.0,   2.5,  5.0,   7.5, 10.0, 20.0, 40.0, 80.0};
  return b;
}

// e2e_request_latency_seconds and the request phases (queue, prefill, decode, inference).
inline const std::vector<double>& RequestLatency() {
  static const std::vector<double> b = {0.3,  0.5,   0.8,   1.0,   1.5,   2.0,    2.5,
                                        5.0,  10.0,  15.0,  20.0,  30.0,  40.0,   50.0,
                                        60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
  return b;
}

// iteration_tokens_total (tokens per engine step).
inline const std::vector<double>& IterationTokens() {
  static const std::vector<double> b = {1,   8,    16,   32,   64,   128,  256,
                                        512, 1024, 2048, 4096, 8192, 16384};
  return b;
}

// vLLM's build_1_2_5_buckets(max_value): 1, 2, 5, 10, 20, 50, ... while <= max_value (the token
// count histograms use the model's context length). Empty for max_value < 1.
inline std::vector<double> OneTwoFive(int64_t max_value) {
  std::vector<double> b;
  for (int64_t scale = 1; scale <= max_value; scale *= 10) {
    for (int64_t m : {1, 2, 5}) {
      if (m * scale > max_value) return b;
      b.push_back(static_cast<double>(m * scale));
    }
    if (scale > max_value / 10) break;  // the next scale would overflow or exceed max_value
  }
  return b;
}

}  // namespace engram::vllm_buckets
