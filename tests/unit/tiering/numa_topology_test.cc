#include "tiering/numa_topology.h"

#include <gtest/gtest.h>

#include <iostream>

namespace engram {
namespace {

TEST(NumaTopologyTest, LoadsThisMachine) {
  auto topology = NumaTopology::Load();
  ASSERT_TRUE(topology.ok()) << topology.status().ToString();
  std::cout << "topology: " << topology->Summary() << "\n";
  ASSERT_GE(topology->num_nodes(), 1);
  EXPECT_GT(topology->total_memory_bytes(), 0u);
  bool some_node_has_memory_and_cpus = false;
  for (const NumaNode& node : topology->nodes()) {
    EXPECT_GE(node.os_index, 0);
    if (node.memory_bytes > 0 && !node.cpus.empty()) some_node_has_memory_and_cpus = true;
  }
  EXPECT_TRUE(some_node_has_memory_and_cpus);
  if (topology->num_nodes() == 1) {
    EXPECT_EQ(topology->nodes()[0].os_index, 0);
    EXPECT_GT(topology->nodes()[0].memory_bytes, 0u);
  }
}

TEST(NumaTopologyTest, CurrentThreadHasAKnownNode) {
  auto topology = NumaTopology::Load();
  ASSERT_TRUE(topology.ok()) << topology.status().ToString();
  std::string reason;
  const int node = topology->NodeOfCurrentThread(&reason);
  ASSERT_GE(node, 0) << reason;
  bool known = false;
  for (const NumaNode& n : topology->nodes()) known |= n.os_index == node;
  EXPECT_TRUE(known) << node;
}

TEST(NumaTopologyTest, BogusPciBusIdIsUnknownWithReason) {
  auto topology = NumaTopology::Load();
  ASSERT_TRUE(topology.ok()) << topology.status().ToString();
  std::string reason;
  EXPECT_EQ(topology->NodeNearPciBus("not-a-bus", &reason), -1);
  EXPECT_NE(reason.find("not a PCI bus id"), std::string::npos) << reason;
  reason.clear();
  EXPECT_EQ(topology->NodeNearPciBus("00:00:00.9", &reason), -1);  // function > 7
  EXPECT_FALSE(reason.empty());
  reason.clear();
  EXPECT_EQ(topology->NodeNearPciBus("0000ffff:fe:1f.7", &reason), -1);  // well formed, absent
  EXPECT_NE(reason.find("not in the hwloc topology"), std::string::npos) << reason;
  EXPECT_EQ(topology->NodeNearPciBus(""), -1);  // reason is optional
}

TEST(NumaTopologyTest, SyntheticTwoNodeCpuSets) {
  auto topology = NumaTopology::LoadSynthetic("pack:2 numa:1 core:2 pu:1");
  ASSERT_TRUE(topology.ok()) << topology.status().ToString();
  ASSERT_EQ(topology->num_nodes(), 2) << topology->Summary();
  EXPECT_EQ(topology->nodes()[0].cpus, (std::vector<int>{0, 1}));
  EXPECT_EQ(topology->nodes()[1].cpus, (std::vector<int>{2, 3}));
  EXPECT_EQ(topology->NodeOfCpuSet({0, 1}), topology->nodes()[0].os_index);
  EXPECT_EQ(topology->NodeOfCpuSet({3}), topology->nodes()[1].os_index);
  std::string reason;
  EXPECT_EQ(topology->NodeOfCpuSet({1, 2}, &reason), -1);
  EXPECT_NE(reason.find("spans"), std::string::npos) << reason;
  EXPECT_EQ(topology->NodeOfCpuSet({99}, &reason), -1);
  EXPECT_NE(reason.find("99"), std::string::npos) << reason;
  EXPECT_EQ(topology->NodeOfCpuSet({}, &reason), -1);
  // Synthetic topologies have no PCI devices.
  EXPECT_EQ(topology->NodeNearPciBus("0000:3b:00.0", &reason), -1);
}

TEST(NumaTopologyTest, RejectsBadSyntheticDescription) {
  auto topology = NumaTopology::LoadSynthetic("this is not hwloc syntax");
  ASSERT_FALSE(topology.ok());
  EXPECT_EQ(topology.status().code(), StatusCode::kInvalidArgument);
}

TEST(NumaTopologyTest, MoveKeepsTheTopology) {
  auto topology = NumaTopology::LoadSynthetic("pack:2 numa:1 core:1 pu:1");
  ASSERT_TRUE(topology.ok());
  NumaTopology moved = std::move(topology).value();
  EXPECT_EQ(moved.num_nodes(), 2);
  EXPECT_EQ(moved.NodeOfCpuSet({1}), moved.nodes()[1].os_index);
}

}  // namespace
}  // namespace engram
