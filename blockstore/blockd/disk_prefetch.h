// Prefetching ranges of a virtual disk by their stored bytes: each disk range is located
// through the layer stack and the compressed files (RandomAccessFile::Locate) down to the
// registry blobs that store it, and only those bytes are fetched, into the node cache, with
// multi-range GETs. Nothing is read or decompressed on the way: the container's own reads do
// that later, from the node cache.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "blockstore/file/file.h"

namespace dadi::blockstore::blockd {

struct DiskPrefetchResult {
  uint64_t disk_bytes = 0;    // of the ranges asked for, inside the disk
  uint64_t stored_bytes = 0;  // behind them, in the files that store them (before rounding
                              // to cache units)
  size_t batches = 0;         // Prefetch calls made (each one or a few requests)
};

// Prefetches `ranges` of `disk` (in order of priority: the first ranges are fetched first),
// kDiskPrefetchWorkers batches at a time, the first batches small. Stops early when `stop` is set;
// fails with the first error of a batch.
inline constexpr int kDiskPrefetchWorkers = 4;
absl::StatusOr<DiskPrefetchResult> PrefetchDiskRanges(const RandomAccessFile& disk,
                                                      const std::vector<ByteRange>& ranges,
                                                      const std::atomic<bool>& stop);

}  // namespace dadi::blockstore::blockd
