#include "tiering/numa_topology.h"

#include <hwloc.h>
#include <sched.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>

#include "common/logging.h"
#include "tiering/host_memory.h"

namespace engram {
namespace {

struct BitmapDeleter {
  void operator()(hwloc_bitmap_s* bitmap) const { hwloc_bitmap_free(bitmap); }
};
using BitmapPtr = std::unique_ptr<hwloc_bitmap_s, BitmapDeleter>;

// "0-3,8,10-11"
std::string CpuListString(const std::vector<int>& cpus) {
  std::string out;
  for (size_t i = 0; i < cpus.size();) {
    size_t j = i;
    while (j + 1 < cpus.size() && cpus[j + 1] == cpus[j] + 1) ++j;
    if (!out.empty()) out += ',';
    out += j == i ? fmt::format("{}", cpus[i]) : fmt::format("{}-{}", cpus[i], cpus[j]);
    i = j + 1;
  }
  return out.empty() ? "none" : out;
}

void SetReason(std::string* reason, std::string text) {
  if (reason != nullptr) *reason = std::move(text);
}

}  // namespace

void NumaTopology::TopologyDeleter::operator()(hwloc_topology* topology) const {
  hwloc_topology_destroy(topology);
}

NumaTopology::~NumaTopology() = default;

Result<NumaTopology> NumaTopology::Load() {
  hwloc_topology_t raw = nullptr;
  if (hwloc_topology_init(&raw) != 0) {
    return ErrnoStatus(StatusCode::kInternal, "hwloc_topology_init", errno);
  }
  TopologyPtr topology(raw);
  // PCI devices (GPUs, NICs, NVMe) are dropped by default; keep the important ones so
  // NodeNearPciBus can find a GPU's locality.
  if (hwloc_topology_set_io_types_filter(raw, HWLOC_TYPE_FILTER_KEEP_IMPORTANT) != 0) {
    spdlog::warn("hwloc: cannot enable PCI discovery ({}); GPU locality will be unknown",
                 std::strerror(errno));
  }
  if (hwloc_topology_load(raw) != 0) {
    return ErrnoStatus(StatusCode::kInternal, "hwloc_topology_load", errno);
  }
  return Finish(std::move(topology));
}

Result<NumaTopology> NumaTopology::LoadSynthetic(const std::string& description) {
  hwloc_topology_t raw = nullptr;
  if (hwloc_topology_init(&raw) != 0) {
    return ErrnoStatus(StatusCode::kInternal, "hwloc_topology_init", errno);
  }
  TopologyPtr topology(raw);
  if (hwloc_topology_set_synthetic(raw, description.c_str()) != 0) {
    return InvalidArgument("hwloc rejects synthetic topology '{}'", description);
  }
  if (hwloc_topology_load(raw) != 0) {
    return ErrnoStatus(StatusCode::kInternal, "hwloc_topology_load (synthetic)", errno);
  }
  return Finish(std::move(topology));
}

Result<NumaTopology> NumaTopology::Finish(TopologyPtr topology) {
  NumaTopology result(std::move(topology));
  hwloc_topology_t t = result.topology_.get();
  const int count = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_NUMANODE);
  for (int i = 0; i < count; ++i) {
    hwloc_obj_t obj = hwloc_get_obj_by_type(t, HWLOC_OBJ_NUMANODE, i);
    if (obj == nullptr) continue;
    NumaNode node;
    node.os_index = static_cast<int>(obj->os_index);
    node.memory_bytes = obj->attr != nullptr ? obj->attr->numanode.local_memory : 0;
    if (obj->cpuset != nullptr) {
      int cpu;
      hwloc_bitmap_foreach_begin(cpu, obj->cpuset) node.cpus.push_back(cpu);
      hwloc_bitmap_foreach_end();
    }
    result.nodes_.push_back(std::move(node));
  }
  if (result.nodes_.empty()) {
    // hwloc 2 always reports at least one NUMA node; keep the contract even if it does not.
    spdlog::warn("hwloc reports no NUMA node; assuming one node 0 with all memory and CPUs");
    NumaNode node;
    hwloc_obj_t root = hwloc_get_root_obj(t);
    if (root != nullptr && root->cpuset != nullptr) {
      int cpu;
      hwloc_bitmap_foreach_begin(cpu, root->cpuset) node.cpus.push_back(cpu);
      hwloc_bitmap_foreach_end();
    }
    result.nodes_.push_back(std::move(node));
  }
  if (result.nodes_.size() == 1 && result.nodes_[0].memory_bytes == 0) {
    result.nodes_[0].memory_bytes = PhysicalMemoryBytes();
    spdlog::info(
        "hwloc reports no memory size for the only NUMA node; using physical memory "
        "({} bytes)",
        result.nodes_[0].memory_bytes);
  }
  std::sort(result.nodes_.begin(), result.nodes_.end(),
            [](const NumaNode& a, const NumaNode& b) { return a.os_index < b.os_index; });
  return result;
}

uint64_t NumaTopology::total_memory_bytes() const {
  uint64_t total = 0;
  for (const NumaNode& node : nodes_) total += node.memory_bytes;
  return total;
}

int NumaTopology::NodeNearPciBus(const std::string& pci_bus_id, std::string* reason) const {
  unsigned domain = 0, bus = 0, dev = 0, func = 0;
  char extra = 0;
  const char* id = pci_bus_id.c_str();
  const bool parsed = std::sscanf(id, "%x:%x:%x.%x%c", &domain, &bus, &dev, &func, &extra) == 4 ||
                      (domain = 0, std::sscanf(id, "%x:%x.%x%c", &bus, &dev, &func, &extra) == 3);
  if (!parsed || bus > 0xff || dev > 0x1f || func > 0x7) {
    SetReason(reason, fmt::format("'{}' is not a PCI bus id (dddd:bb:dd.f)", pci_bus_id));
    return -1;
  }
  hwloc_topology_t t = topology_.get();
  hwloc_obj_t pci = hwloc_get_pcidev_by_busid(t, domain, bus, dev, func);
  if (pci == nullptr) {
    SetReason(reason, fmt::format("PCI device {:04x}:{:02x}:{:02x}.{:x} is not in the hwloc "
                                  "topology (absent, or PCI discovery unavailable)",
                                  domain, bus, dev, func));
    return -1;
  }
  hwloc_obj_t ancestor = hwloc_get_non_io_ancestor_obj(t, pci);
  if (ancestor == nullptr || ancestor->nodeset == nullptr) {
    SetReason(reason,
              fmt::format("PCI device {} has no CPU-side ancestor with a node set", pci_bus_id));
    return -1;
  }
  const int weight = hwloc_bitmap_weight(ancestor->nodeset);
  if (weight != 1) {
    SetReason(reason, fmt::format("PCI device {} attaches at a {} local to {} NUMA nodes",
                                  pci_bus_id, hwloc_obj_type_string(ancestor->type), weight));
    return -1;
  }
  return hwloc_bitmap_first(ancestor->nodeset);
}

int NumaTopology::NodeOfCurrentThread(std::string* reason) const {
  int cpu = -1;
  BitmapPtr set(hwloc_bitmap_alloc());
  if (set != nullptr &&
      hwloc_get_last_cpu_location(topology_.get(), set.get(), HWLOC_CPUBIND_THREAD) == 0) {
    cpu = hwloc_bitmap_first(set.get());
  }
  if (cpu < 0) cpu = sched_getcpu();
  if (cpu < 0) {
    SetReason(reason, fmt::format("cannot tell the current CPU: {}", std::strerror(errno)));
    return -1;
  }
  return NodeOfCpuSet({cpu}, reason);
}

int NumaTopology::NodeOfCpuSet(const std::vector<int>& cpus, std::string* reason) const {
  if (cpus.empty()) {
    SetReason(reason, "empty CPU set");
    return -1;
  }
  std::set<int> found;
  for (int cpu : cpus) {
    int owner = -1;
    for (const NumaNode& node : nodes_) {
      if (std::binary_search(node.cpus.begin(), node.cpus.end(), cpu)) {
        owner = node.os_index;
        break;
      }
    }
    if (owner < 0) {
      SetReason(reason, fmt::format("CPU {} belongs to no known NUMA node", cpu));
      return -1;
    }
    found.insert(owner);
  }
  if (found.size() != 1) {
    SetReason(reason, fmt::format("CPU set spans NUMA nodes {}",
                                  CpuListString(std::vector<int>(found.begin(), found.end()))));
    return -1;
  }
  return *found.begin();
}

std::string NumaTopology::Summary() const {
  std::string out = fmt::format("{} NUMA node{}:", nodes_.size(), nodes_.size() == 1 ? "" : "s");
  for (size_t i = 0; i < nodes_.size(); ++i) {
    const NumaNode& node = nodes_[i];
    out += fmt::format("{} node{} {:.1f} GiB cpus {}", i == 0 ? "" : ";", node.os_index,
                       static_cast<double>(node.memory_bytes) / (1ull << 30),
                       CpuListString(node.cpus));
  }
  return out;
}

}  // namespace engram
