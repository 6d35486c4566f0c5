// ChooseTablePlacement: tables.numa resolved against real and synthetic hwloc topologies.
#include "tiering/table_placement.h"

#include <gtest/gtest.h>

namespace engram {
namespace {

NumaTopology TwoNodes() {
  auto t = NumaTopology::LoadSynthetic("pack:2 numa:1 core:2 pu:1");  // cpus 0-1 | 2-3
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return std::move(t).value();
}

TEST(TablePlacement, AutoBindsToTheNodeOfTheEnginesCpus) {
  const NumaTopology t = TwoNodes();
  PlacementRequest r;
  r.cpus = {2, 3};
  auto p = ChooseTablePlacement(t, r);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->policy, NumaPolicy::kBind);
  EXPECT_EQ(p->node, t.nodes()[1].os_index);
  EXPECT_NE(p->why.find("holds all 2 of the engine's CPUs"), std::string::npos) << p->why;
}

TEST(TablePlacement, AutoInterleavesWhenTheCpusSpanNodes) {
  const NumaTopology t = TwoNodes();
  PlacementRequest r;
  r.cpus = {0, 1, 2, 3};
  r.pci_bus_id = "0000:3b:00.0";  // not in a synthetic topology
  auto p = ChooseTablePlacement(t, r);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->policy, NumaPolicy::kInterleave);
  EXPECT_EQ(p->interleave_nodes.size(), 2u);
  EXPECT_NE(p->why.find("the GPU's node is unknown"), std::string::npos) << p->why;
}

TEST(TablePlacement, ExplicitModes) {
  const NumaTopology t = TwoNodes();
  PlacementRequest r;
  r.mode = "none";
  EXPECT_EQ(ChooseTablePlacement(t, r)->policy, NumaPolicy::kNone);
  r.mode = "interleave";
  EXPECT_EQ(ChooseTablePlacement(t, r)->policy, NumaPolicy::kInterleave);
  r.mode = "bind";
  r.node = t.nodes()[1].os_index;
  auto p = ChooseTablePlacement(t, r);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->policy, NumaPolicy::kBind);
  EXPECT_EQ(p->node, r.node);
}

TEST(TablePlacement, BadRequestsNameTheValue) {
  const NumaTopology t = TwoNodes();
  PlacementRequest r;
  r.mode = "bind";
  r.node = 7;
  Status st = ChooseTablePlacement(t, r).status();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("tables.numa_node 7 is not a NUMA node"), std::string::npos)
      << st.message();
  r.node = -1;
  r.cpus = {0, 3};  // spans both nodes: nothing to bind to
  st = ChooseTablePlacement(t, r).status();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("set tables.numa_node"), std::string::npos) << st.message();
  r.mode = "spread";
  st = ChooseTablePlacement(t, r).status();
  EXPECT_NE(st.message().find("auto, bind, interleave, none"), std::string::npos) << st.message();
}

TEST(TablePlacement, ThisMachine) {
  auto t = NumaTopology::Load();
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  PlacementRequest r;
  for (const NumaNode& n : t->nodes()) r.cpus.insert(r.cpus.end(), n.cpus.begin(), n.cpus.end());
  auto p = ChooseTablePlacement(*t, r);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  std::printf("this machine: %s (%s)\n", NumaPolicyName(p->policy), p->why.c_str());
  if (t->num_nodes() == 1) {
    EXPECT_EQ(p->policy, NumaPolicy::kBind);
    EXPECT_EQ(p->why, "a single NUMA node");
  }
}

}  // namespace
}  // namespace engram
