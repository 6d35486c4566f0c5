#include "common/host_port.h"

#include <gtest/gtest.h>

namespace engram {
namespace {

TEST(HostPort, ParsesForms) {
  auto a = ParseHostPort("127.0.0.1:50051", "server.listen");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 50051);
  auto v6 = ParseHostPort("[::1]:0", "server.listen");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->host, "::1");
  auto any = ParseHostPort(":8080", "metrics.listen");
  ASSERT_TRUE(any.ok());
  EXPECT_EQ(any->host, "");
}

TEST(HostPort, RefusesBadPortsNamingTheKey) {
  for (const char* bad :
       {"nohost", "127.0.0.1:99999", "127.0.0.1:abc", "127.0.0.1:", "::1:80", "127.0.0.1:-1"}) {
    auto r = ParseHostPort(bad, "metrics.listen");
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().message().rfind("metrics.listen: ", 0), 0u) << r.status().message();
  }
}

TEST(HostPort, ResolvesLiteralsAndLocalhost) {
  auto a = ResolveListenAddress("127.0.0.1:0", "server.listen");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->numeric, "127.0.0.1:0");
  EXPECT_EQ(a->family, AF_INET);
}

// (Names that do not resolve are not tested: that would ask the DNS server, off this machine.)
TEST(HostPort, RefusesMalformedIpv4Literals) {
  auto bad4 = ResolveListenAddress("256.0.0.1:0", "server.listen");
  ASSERT_FALSE(bad4.ok());
  EXPECT_NE(bad4.status().message().find("\"256.0.0.1\" is not an IPv4 address"), std::string::npos)
      << bad4.status().message();
}

}  // namespace
}  // namespace engram
