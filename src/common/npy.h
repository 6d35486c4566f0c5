// Writing numpy .npy files (format version 1.0, little-endian float32, C order).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace engram {

Status WriteNpyF32(const std::string& path, const std::vector<int64_t>& shape, const float* data);

// Reads a file written by WriteNpyF32 (or numpy with dtype '<f4', C order).
Status ReadNpyF32(const std::string& path, std::vector<int64_t>* shape, std::vector<float>* data);

}  // namespace engram
