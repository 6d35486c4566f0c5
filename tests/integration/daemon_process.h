// DaemonProcess: a real engramd child process for integration tests. Writes a model.yaml into
// a fresh temporary directory, starts `engramd --config` (fork/exec; the child dies with the
// test process), reads the ephemeral port from its "listening on HOST:PORT" line and waits for
// "ready". Stop() (and the destructor) sends SIGTERM, then SIGKILL after a timeout. The
// daemon's stderr goes to a file in the temporary directory (StderrLog()).
//
// Thread safety: one thread drives a DaemonProcess; a private thread reads its stdout.
#pragma once

#include <sys/types.h>

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"

namespace engram::testing {

// The DeepSeek-V3 tokenizer fixture (installed by scripts/setup.sh).
std::string FixtureTokenizer();

// A wait status in words ("exit code 0", "killed by signal 9"; nullopt: "still running").
std::string ExitDescription(std::optional<int> wait_status);

struct DaemonOptions {
  // The `model:` key; `tokenizer` (when not empty) is the top-level `tokenizer:` key.
  std::string model = "synth:tiny";
  std::string tokenizer = FixtureTokenizer();
  int backend_threads = 1;
  std::string backend_weights = "auto";  // backend.weights
  std::string listen = "127.0.0.1:0";    // server.listen
  int max_message_bytes = 1 << 20;
  double drain_grace_s = 10;
  int max_running_seqs = 16;
  int max_waiting = 256;
  int max_tokens_default = 64;
  int64_t kv_tokens = 65536;
  std::string log_level = "info";
  bool metrics = false;     // serve Prometheus metrics on an ephemeral loopback port
  bool http = true;         // the HTTP front door on an ephemeral loopback port (else disabled)
  std::string extra_yaml;   // appended to the config as it is (further top-level sections)
  std::string server_yaml;  // more keys of the server section, each line indented by 2
  std::string tables;       // the `tables:` section's body (indented keys), empty = defaults
  // Seconds to wait for "listening" and (when wait_ready) for "ready".
  double start_timeout_s = 60;
  bool wait_ready = true;
  // Changes to the inherited environment: "NAME=value" sets NAME (replacing an inherited
  // value), a bare "NAME" removes it (e.g. NOTIFY_SOCKET, WATCHDOG_USEC for systemd tests).
  std::vector<std::string> env;
};

class DaemonProcess {
 public:
  // Starts engramd (the ENGRAMD compile definition) and waits for its port (and readiness).
  static Result<std::unique_ptr<DaemonProcess>> Start(const DaemonOptions& options);
  ~DaemonProcess();

  DaemonProcess(const DaemonProcess&) = delete;
  DaemonProcess& operator=(const DaemonProcess&) = delete;

  // "127.0.0.1:PORT".
  const std::string& address() const { return address_; }
  // The HTTP front door's "127.0.0.1:PORT" (empty when options.http is false).
  const std::string& http_address() const { return http_address_; }
  pid_t pid() const { return pid_; }

  // Waits until stdout has a line starting with `prefix`; DEADLINE_EXCEEDED (with the
  // daemon's stderr) otherwise, FAILED_PRECONDITION if the process ended first.
  Status WaitForLine(const std::string& prefix, double timeout_s);
  Status WaitReady(double timeout_s) { return WaitForLine("engramd: ready", timeout_s); }
  // The first stdout line starting with `prefix`, if printed yet.
  std::optional<std::string> Line(const std::string& prefix) const;
  // The first stdout line (the log included) containing `text`, if printed yet.
  std::optional<std::string> LineContaining(const std::string& text) const;

  Status Signal(int sig);
  // Waits up to `timeout_s` for the process to exit; its wait status (nullopt: still running).
  std::optional<int> WaitExit(double timeout_s);
  // SIGTERM, then SIGKILL if it has not exited after `timeout_s`. Returns the wait status.
  int Stop(double timeout_s = 15);

  // The daemon's stderr so far (its log).
  std::string StderrLog() const;

 private:
  DaemonProcess() = default;
  void ReadStdout(int fd);

  pid_t pid_ = -1;
  std::optional<int> wait_status_;
  std::string dir_;
  std::string address_;
  std::string http_address_;
  std::thread reader_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> lines_;  // GUARDED_BY(mu_)
  bool eof_ = false;                // GUARDED_BY(mu_)
};

}  // namespace engram::testing
