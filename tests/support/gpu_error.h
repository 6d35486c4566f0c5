// Helpers of the GPU tests that compare device results with float64 references.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "common/status.h"

// Fails the test (and returns) when a Status is not OK, printing the expression and status.
#define ASSERT_OK(expr)                                       \
  do {                                                        \
    const ::engram::Status _st = (expr);                      \
    ASSERT_TRUE(_st.ok()) << #expr << ": " << _st.ToString(); \
  } while (0)

namespace engram::testutil {

// Relative Frobenius error ||out - ref|| / ||ref||; infinity for a size mismatch or a
// non-finite output.
inline double RelErr(const std::vector<float>& out, const std::vector<double>& ref) {
  if (out.size() != ref.size()) return std::numeric_limits<double>::infinity();
  double num = 0, den = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    if (!std::isfinite(out[i])) return std::numeric_limits<double>::infinity();
    num += (out[i] - ref[i]) * (out[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

// Prints the error beside its tolerance and expects it within.
inline void ReportError(const std::string& what, double err, double tol) {
  std::printf("[  error   ] %-48s %.3e (tolerance %.0e)\n", what.c_str(), err, tol);
  EXPECT_LE(err, tol) << what;
}

}  // namespace engram::testutil
