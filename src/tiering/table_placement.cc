#include "tiering/table_placement.h"

#include <fmt/format.h>

namespace engram {
namespace {

std::vector<int> AllNodes(const NumaTopology& t) {
  std::vector<int> nodes;
  for (const NumaNode& n : t.nodes()) nodes.push_back(n.os_index);
  return nodes;
}

std::string NodeList(const NumaTopology& t) {
  std::string s;
  for (const NumaNode& n : t.nodes()) s += (s.empty() ? "" : ", ") + std::to_string(n.os_index);
  return s;
}

// What "auto" chooses.
Placement Auto(const NumaTopology& t, const PlacementRequest& r) {
  Placement p;
  if (t.num_nodes() == 1) {
    p.policy = NumaPolicy::kBind;
    p.node = t.nodes()[0].os_index;
    p.why = "a single NUMA node";
    return p;
  }
  std::string gpu_reason;
  if (!r.pci_bus_id.empty()) {
    const int node = t.NodeNearPciBus(r.pci_bus_id, &gpu_reason);
    if (node >= 0) {
      p.policy = NumaPolicy::kBind;
      p.node = node;
      p.why = fmt::format("node {} is nearest the GPU at {}", node, r.pci_bus_id);
      return p;
    }
  }
  std::string cpu_reason;
  const int node = t.NodeOfCpuSet(r.cpus, &cpu_reason);
  if (node >= 0) {
    p.policy = NumaPolicy::kBind;
    p.node = node;
    p.why = fmt::format("node {} holds all {} of the engine's CPUs", node, r.cpus.size());
  } else {
    p.policy = NumaPolicy::kInterleave;
    p.interleave_nodes = AllNodes(t);
    p.why = fmt::format("interleaved over nodes {} ({})", NodeList(t), cpu_reason);
  }
  if (!r.pci_bus_id.empty()) p.why += fmt::format("; the GPU's node is unknown: {}", gpu_reason);
  return p;
}

}  // namespace

Result<Placement> ChooseTablePlacement(const NumaTopology& t, const PlacementRequest& r) {
  if (r.mode == "auto") return Auto(t, r);
  Placement p;
  if (r.mode == "none") {
    p.why = "tables.numa none (the kernel's first-touch placement)";
  } else if (r.mode == "interleave") {
    p.policy = NumaPolicy::kInterleave;
    p.interleave_nodes = AllNodes(t);
    p.why = fmt::format("tables.numa interleave over nodes {}", NodeList(t));
  } else if (r.mode == "bind") {
    if (r.node < 0) {
      p = Auto(t, r);
      if (p.policy != NumaPolicy::kBind) {
        return InvalidArgument(
            "tables.numa bind without tables.numa_node: no single node is nearest the device "
            "or holds the engine's CPUs ({}); set tables.numa_node to one of: {}",
            p.why, NodeList(t));
      }
      return p;
    }
    bool known = false;
    for (const NumaNode& n : t.nodes()) known |= n.os_index == r.node;
    if (!known) {
      return InvalidArgument("tables.numa_node {} is not a NUMA node of this machine (nodes: {})",
                             r.node, NodeList(t));
    }
    p.policy = NumaPolicy::kBind;
    p.node = r.node;
    p.why = fmt::format("tables.numa bind to node {}", r.node);
  } else {
    return InvalidArgument("tables.numa \"{}\" (expected one of: auto, bind, interleave, none)",
                           r.mode);
  }
  return p;
}

}  // namespace engram
