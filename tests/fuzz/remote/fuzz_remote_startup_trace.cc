// Startup trace blobs (fetched from registries: ranges, stored ranges, packs, files) and the
// recorder that makes them.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "blockstore/remote/startup_trace.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace dadi::blockstore;
  std::string in(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<StartupTrace> trace = ParseStartupTrace(in);
  if (trace.ok()) {
    // What we serialise we must parse back, unchanged.
    absl::StatusOr<StartupTrace> again = ParseStartupTrace(SerializeStartupTrace(*trace));
    if (!again.ok() || again->ranges != trace->ranges || again->stored != trace->stored ||
        again->packs != trace->packs || again->files != trace->files) {
      __builtin_trap();
    }
    for (const TracedFile& f : trace->files) {
      if (!IsSafeRelativePath(f.path)) __builtin_trap();  // never a path out of the mount
    }
  }
  // The same bytes as reads: the recorder stays bounded and inside the disk.
  TraceRecorder recorder(1 << 20);
  for (size_t i = 0; i + 8 <= size; i += 8) {
    uint32_t offset, length;
    std::memcpy(&offset, data + i, 4);
    std::memcpy(&length, data + i + 4, 4);
    recorder.Record(offset % (2 << 20), length % (256 << 10));
  }
  if (!ParseStartupTrace(SerializeStartupTrace(recorder.trace())).ok()) __builtin_trap();
  return 0;
}
