// Where the dram tier puts the Engram tables: the NUMA policy (tables.numa) resolved against
// the machine's topology. "auto" binds the tables to the node nearest the GPU (its PCI bus,
// through hwloc) or, on the CPU backend, to the node holding all of the engine's CPUs, and
// interleaves them over every node when those CPUs span several (so every thread's reads
// spread over all memory controllers). A single-node machine gets node 0.
//
// Thread safety: a pure function of its arguments.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"
#include "tiering/host_memory.h"
#include "tiering/numa_topology.h"

namespace engram {

struct PlacementRequest {
  std::string mode = "auto";  // auto | bind | interleave | none
  int node = -1;              // bind: the OS node; -1 = as auto would choose
  std::string pci_bus_id;     // the GPU's ("0000:3b:00.0"), empty on the CPU backend
  std::vector<int> cpus;      // OS indices of the CPUs the engine may run on
};

struct Placement {
  NumaPolicy policy = NumaPolicy::kNone;
  int node = 0;                       // kBind
  std::vector<int> interleave_nodes;  // kInterleave: every node
  std::string why;                    // for the log: "nearest the GPU 0000:3b:00.0", ...
};

// INVALID_ARGUMENT naming the value for an unknown mode or a bind node the machine lacks.
Result<Placement> ChooseTablePlacement(const NumaTopology& topology, const PlacementRequest& r);

}  // namespace engram
