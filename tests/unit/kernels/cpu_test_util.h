// Helpers shared by the CPU backend tests: backends per instruction set, random data,
// float64 comparisons and NaN-poisoned outputs.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/isa.h"

namespace engram::cpu_test {

// The instruction sets this machine can run: scalar always, AVX2 and AVX-512 when present.
inline std::vector<CpuIsa> IsasToTest() {
  std::vector<CpuIsa> isas = {CpuIsa::kScalar};
  if (CpuHasAvx2Fma()) isas.push_back(CpuIsa::kAvx2);
  if (CpuHasAvx512()) isas.push_back(CpuIsa::kAvx512);
  return isas;
}

inline std::string IsaParamName(const ::testing::TestParamInfo<CpuIsa>& info) {
  return std::string(CpuIsaName(info.param));
}

inline std::unique_ptr<Backend> MakeBackend(CpuIsa isa, int threads = 2) {
  BackendOptions options;
  options.threads = threads;
  auto b = CreateCpuBackend(options, isa);
  EXPECT_TRUE(b.ok()) << b.status().ToString();
  return std::move(b).value();
}

inline std::vector<float> RandomFloats(size_t n, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// A host tensor holding a copy of `v`.
inline Tensor FromVector(const std::vector<float>& v, std::vector<int64_t> shape) {
  Tensor t = HostTensor(DType::kF32, std::move(shape));
  EXPECT_EQ(static_cast<size_t>(t.numel()), v.size());
  std::memcpy(t.data, v.data(), v.size() * sizeof(float));
  return t;
}

// Rounds `v` to dtype (F32, BF16, F16) in a new host tensor and returns the rounded values.
inline Tensor ToDType(const std::vector<float>& v, std::vector<int64_t> shape, DType dtype,
                      std::vector<float>* rounded) {
  Tensor t = HostTensor(dtype, std::move(shape));
  rounded->resize(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    if (dtype == DType::kF32) {
      t.ptr<float>()[i] = v[i];
      (*rounded)[i] = v[i];
    } else if (dtype == DType::kBF16) {
      t.ptr<uint16_t>()[i] = F32ToBf16(v[i]);
      (*rounded)[i] = Bf16ToF32(t.ptr<uint16_t>()[i]);
    } else {
      t.ptr<uint16_t>()[i] = F32ToF16(v[i]);
      (*rounded)[i] = F16ToF32(t.ptr<uint16_t>()[i]);
    }
  }
  return t;
}

// An uninitialized backend tensor filled with NaN, so unwritten elements show.
inline Tensor Poisoned(Backend& b, std::vector<int64_t> shape) {
  auto t = b.Alloc(DType::kF32, std::move(shape));
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  float* p = t->ptr<float>();
  for (int64_t i = 0; i < t->numel(); ++i) p[i] = std::numeric_limits<float>::quiet_NaN();
  return std::move(t).value();
}

inline std::vector<float> ToVector(const Tensor& t) {
  const float* p = t.ptr<float>();
  return std::vector<float>(p, p + t.numel());
}

// ||out - ref|| / ||ref||; infinite when out holds a NaN.
inline double RelError(const std::vector<float>& out, const std::vector<double>& ref) {
  EXPECT_EQ(out.size(), ref.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < out.size() && i < ref.size(); ++i) {
    if (std::isnan(out[i])) return std::numeric_limits<double>::infinity();
    num += (out[i] - ref[i]) * (out[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

inline double Silu(double x) { return x / (1.0 + std::exp(-x)); }

}  // namespace engram::cpu_test
