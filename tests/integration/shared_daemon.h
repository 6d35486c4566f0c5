// One engramd shared by the tests of a suite: fixtures call SharedDaemon::Start from
// SetUpTestSuite and SharedDaemon::Stop from TearDownTestSuite (suites run one after another).
#pragma once

#include <gtest/gtest.h>

#include <memory>

#include "daemon_process.h"
#include "rpc_helpers.h"

namespace engram::testing {

struct SharedDaemon {
  static inline std::unique_ptr<DaemonProcess> daemon;
  static inline std::shared_ptr<grpc::Channel> channel;

  static void Start(const DaemonOptions& options) {
    auto d = DaemonProcess::Start(options);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    daemon = std::move(d).value();
    channel = Connect(daemon->address());
  }
  // Stops the daemon; a clean drain exits 0.
  static void Stop() {
    channel.reset();
    if (daemon) {
      EXPECT_EQ(daemon->Stop(), 0) << daemon->StderrLog();
    }
    daemon.reset();
  }
};

}  // namespace engram::testing
