// Fuzzes the safetensors header parser (TensorStore::OpenFile): each input is a whole
// .safetensors file. OpenFile takes a path and maps the file, so the input is written to a
// memfd (one per process, rewritten for each input) and opened as /proc/self/fd/N. When the
// file opens, every tensor's view is read end to end: a view reaching outside the mapping is
// an ASan report or a SIGBUS/SIGSEGV, and each tensor's byte count must equal its shape x dtype.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_common.h"
#include "model/safetensors.h"

namespace {

volatile unsigned g_sink;  // the tensors' byte sums go here, so the reads are not optimized out

int InputFd() {
  static const int fd = memfd_create("fuzz_safetensors", MFD_CLOEXEC);
  if (fd < 0) engram::fuzz::Fail("memfd_create failed");
  return fd;
}

void WriteInput(int fd, const uint8_t* data, size_t size) {
  if (ftruncate(fd, 0) != 0) engram::fuzz::Fail("ftruncate failed");
  size_t done = 0;
  while (done < size) {
    const ssize_t n = pwrite(fd, data + done, size - done, static_cast<off_t>(done));
    if (n <= 0) engram::fuzz::Fail("pwrite to the memfd failed");
    done += static_cast<size_t>(n);
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  engram::fuzz::QuietLogs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const int fd = InputFd();
  WriteInput(fd, data, size);
  auto store = engram::TensorStore::OpenFile("/proc/self/fd/" + std::to_string(fd));
  engram::fuzz::Note("OpenFile", store.status());
  if (!store.ok()) return 0;
  for (const std::string& name : store->Names()) {
    const engram::TensorInfo* info = store->Info(name);
    if (info == nullptr) engram::fuzz::Fail("Names() lists " + name + " but Info() has none");
    auto t = store->Get(name);
    if (!t.ok()) continue;
    if (t->nbytes() != info->nbytes) {
      engram::fuzz::Fail("tensor " + name + ": view bytes differ from the header's byte count");
    }
    if (info->file_offset + info->nbytes > size) {
      engram::fuzz::Fail("tensor " + name + " reaches past the end of the file");
    }
    const auto* p = static_cast<const volatile unsigned char*>(t->data);
    unsigned sum = 0;
    for (size_t i = 0; i < t->nbytes(); ++i) sum += p[i];
    g_sink = sum;
  }
  return 0;
}
