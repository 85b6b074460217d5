// Prefetching ranges of a virtual disk by their stored bytes: each disk range is located
// through the layer stack and the compressed files (RandomAccessFile::Locate) down to the
// registry blobs that store it, and only those bytes are fetched, into the node cache, with
// multi-range GETs. Nothing is read or decompressed on the way: the container's own reads do
// that later, from the node cache.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
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

// Decompresses the blocks holding `ranges` of `disk` into their block caches
// (RandomAccessFile::WarmCache), in order, until `max_bytes` of the disk or `stop`; their stored
// bytes should be local already (PrefetchDiskRanges). Returns the bytes of the disk warmed.
absl::StatusOr<uint64_t> DecompressDiskRanges(const RandomAccessFile& disk,
                                              const std::vector<ByteRange>& ranges,
                                              uint64_t max_bytes, const std::atomic<bool>& stop);

// Reads the ranges of at most `max_length` bytes through the block device at `device_path`
// (in order, without readahead), so that they sit in the device's page cache: ext4 reads its
// metadata (inodes, directory and extent blocks) through that cache, while file data goes
// through each file's own. Small trace ranges are mostly such metadata; reading them ahead
// saves the container one FUSE round trip each. Returns the ranges read; stops at `stop`.
absl::StatusOr<size_t> ReadSmallRangesThroughDevice(const std::string& device_path,
                                                    const std::vector<ByteRange>& ranges,
                                                    uint64_t max_length,
                                                    const std::atomic<bool>& stop);

}  // namespace dadi::blockstore::blockd
