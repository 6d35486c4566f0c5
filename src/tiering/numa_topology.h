// NumaTopology: the machine's NUMA nodes as hwloc sees them (memory size, CPUs), and which
// node is nearest a PCI device (a GPU) or a set of CPUs (the CPU backend's threads). The host
// tier uses it to decide where Engram tables live. A machine without NUMA is one node 0 that
// holds all memory and all CPUs.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

struct hwloc_topology;  // hwloc's opaque topology (hwloc_topology_t is a pointer to it)

namespace engram {

struct NumaNode {
  int os_index = 0;           // the OS node number (what mbind/libnuma/sysfs call it)
  uint64_t memory_bytes = 0;  // memory local to the node
  std::vector<int> cpus;      // OS indices of the node's CPUs (PUs), ascending
};

class NumaTopology {
 public:
  // The running machine's topology, PCI devices included (I/O filter KEEP_IMPORTANT).
  // INTERNAL when hwloc cannot load it.
  static Result<NumaTopology> Load();
  // A synthetic topology (hwloc's syntax, e.g. "pack:2 numa:1 core:4 pu:1"), for tests.
  // It has no PCI devices. INVALID_ARGUMENT when hwloc rejects the description.
  static Result<NumaTopology> LoadSynthetic(const std::string& description);

  NumaTopology(NumaTopology&&) noexcept = default;
  NumaTopology& operator=(NumaTopology&&) noexcept = default;
  ~NumaTopology();

  // Ascending by os_index; never empty.
  const std::vector<NumaNode>& nodes() const { return nodes_; }
  int num_nodes() const { return static_cast<int>(nodes_.size()); }
  uint64_t total_memory_bytes() const;

  // The NUMA node nearest the PCI device "dddd:bb:dd.f" or "bb:dd.f" (hex; CUDA's
  // cudaDeviceGetPCIBusId form "00000000:3B:00.0" is accepted). -1 when the id is malformed,
  // the device is not in the topology, or it is not local to exactly one node; `reason`
  // (optional) then says which.
  int NodeNearPciBus(const std::string& pci_bus_id, std::string* reason = nullptr) const;
  // The node of the CPU the calling thread last ran on; -1 (with reason) when unknown.
  int NodeOfCurrentThread(std::string* reason = nullptr) const;
  // The one node holding all of `cpus` (OS indices); -1 (with reason) when empty, unknown
  // or spanning several nodes.
  int NodeOfCpuSet(const std::vector<int>& cpus, std::string* reason = nullptr) const;

  // "2 NUMA nodes: node0 64.0 GiB cpus 0-15; node1 ..." for logs.
  std::string Summary() const;

 private:
  struct TopologyDeleter {
    void operator()(hwloc_topology* topology) const;
  };
  using TopologyPtr = std::unique_ptr<hwloc_topology, TopologyDeleter>;

  static Result<NumaTopology> Finish(TopologyPtr topology);
  explicit NumaTopology(TopologyPtr topology) : topology_(std::move(topology)) {}

  TopologyPtr topology_;
  std::vector<NumaNode> nodes_;
};

}  // namespace engram
