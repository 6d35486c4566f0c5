#pragma once

namespace engram {

// The engramd release version ("MAJOR.MINOR.PATCH").
const char* Version();

}  // namespace engram
