// Running the real command-line clients of the tests (curl, openssl, node) through the shell:
// the exit status, or stdout captured. Header-only.
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace engram::testing {

// Runs `cmd` with its output discarded; its exit status (-1 if it could not run).
inline int Shell(const std::string& cmd) {
  const int rc = std::system(("(" + cmd + ") >/dev/null 2>&1").c_str());
  return rc == -1 ? -1 : WIFEXITED(rc) ? WEXITSTATUS(rc) : 128;
}

// Runs `cmd` and returns its stdout; *exit_status (when given) gets its exit status.
inline std::string Capture(const std::string& cmd, int* exit_status = nullptr) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) {
    if (exit_status) *exit_status = -1;
    return out;
  }
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int rc = ::pclose(p);
  if (exit_status) *exit_status = WIFEXITED(rc) ? WEXITSTATUS(rc) : 128;
  return out;
}

}  // namespace engram::testing
