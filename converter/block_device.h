// The block device an ext4 file system is built on. The converter writes each layer's file
// system through this interface: in tests over a local file, in `dadi convert` over an LSMT
// writable layer stacked on the layers already converted (reads see the lower layers plus this
// layer's writes; writes land in the new layer only). So callers write only blocks that
// changed, in large contiguous runs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dadi::converter {

// Offsets and lengths of every call are multiples of kSectorSize. Ranges never written read as
// zeros (the file system relies on that: inode tables are not zeroed at creation). Not
// thread-safe: one file system owns a device at a time.
class BlockDevice {
 public:
  static constexpr uint64_t kSectorSize = 512;

  virtual ~BlockDevice() = default;

  // Size of the device in bytes, a multiple of kSectorSize.
  virtual uint64_t Size() const = 0;

  // Reads exactly n bytes at offset. OUT_OF_RANGE past the end.
  virtual absl::Status Pread(uint64_t offset, size_t n, char* buf) = 0;

  // Writes all of data at offset. OUT_OF_RANGE past the end.
  virtual absl::Status Pwrite(uint64_t offset, absl::string_view data) = 0;

  // Makes the writes so far durable (or visible to the next stage).
  virtual absl::Status Flush() = 0;

  // For error messages.
  virtual std::string Name() const = 0;
};

// A device over a local (sparse) file. With `create_size`, the file is created or truncated to
// that size (a sparse file: reads of unwritten ranges give zeros); without it, an existing file
// is opened read-write and its size rounded down to a sector is the device size.
absl::StatusOr<std::unique_ptr<BlockDevice>> OpenFileBlockDevice(const std::string& path);
absl::StatusOr<std::unique_ptr<BlockDevice>> CreateFileBlockDevice(const std::string& path,
                                                                   uint64_t size);

// A sparse in-memory device (4 KiB pages allocated on first write), for tests and fuzzing.
std::unique_ptr<BlockDevice> NewMemoryBlockDevice(uint64_t size, std::string name = "memory");

}  // namespace dadi::converter
