// ParallelFor: runs N independent jobs on a few threads, the calling thread included.
#pragma once

#include <cstddef>
#include <functional>

#include "common/status.h"

namespace engram {

// `requested` when positive, else min(hardware threads, 8) (at least 1).
int DefaultThreads(int requested);

// Calls fn(i) exactly once for every i in [0, jobs) (unless a job fails) on
// min(DefaultThreads(threads), jobs) threads, the caller's included; jobs are handed out in
// index order to whichever thread is free. A thread that cannot be started is not an error:
// the running threads take its share. The first error fn returns stops the threads from
// taking further jobs and is returned once all have finished. fn must not throw.
Status ParallelFor(size_t jobs, int threads, const std::function<Status(size_t)>& fn);

}  // namespace engram
