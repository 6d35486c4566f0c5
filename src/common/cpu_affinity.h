// The CPUs this process may run on (its sched_getaffinity mask), for sizing thread pools and
// choosing the NUMA node nearest the work.
#pragma once

#include <vector>

namespace engram {

// OS CPU indices in ascending order; empty when the mask cannot be read.
std::vector<int> AllowedCpus();

}  // namespace engram
