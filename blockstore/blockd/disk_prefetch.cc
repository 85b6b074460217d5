#include "blockstore/blockd/disk_prefetch.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "blockstore/device/errno_code.h"
#include "blockstore/file/stored_ranges.h"
#include "blockstore/file/unique_fd.h"

namespace dadi::blockstore::blockd {
namespace {

// Stored ranges per batch. A batch is cut from the located ranges in the disk ranges' order, so
// that what the container reads first is fetched first; within a batch each file gets one
// Prefetch of its ranges (sorted and merged), which it sends as one or a few multi-range GETs.
// The first batches are small and grow to kBatchExtents: the first reads (the mount's) wait
// for a short request, not for one of many ranges.
constexpr size_t kFirstBatchExtents = 4;
constexpr size_t kBatchExtents = 64;

}  // namespace

absl::StatusOr<DiskPrefetchResult> PrefetchDiskRanges(const RandomAccessFile& disk,
                                                      const std::vector<ByteRange>& ranges,
                                                      const std::atomic<bool>& stop) {
  DiskPrefetchResult result;
  std::vector<FileExtent> extents;
  for (const ByteRange& r : ranges) {
    if (r.offset >= disk.Size()) continue;
    result.disk_bytes += std::min(r.length, disk.Size() - r.offset);
    disk.Locate(r.offset, r.length, &extents);
  }
  for (const FileExtent& e : extents) result.stored_bytes += e.range.length;
  std::vector<StoredRanges> batches;
  for (size_t i = 0, size = kFirstBatchExtents; i < extents.size();
       i += size, size = std::min(2 * size, kBatchExtents)) {
    const size_t end = std::min(extents.size(), i + size);
    for (StoredRanges& g : GroupByFile({extents.begin() + i, extents.begin() + end})) {
      batches.push_back(std::move(g));
    }
  }
  result.batches = batches.size();

  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  absl::Mutex mu;
  absl::Status first_error;
  auto worker = [&] {
    for (size_t i = next++; i < batches.size() && !stop.load() && !failed.load(); i = next++) {
      absl::Status s = batches[i].file->Prefetch(batches[i].ranges);
      if (!s.ok()) {
        absl::MutexLock lock(&mu);
        if (first_error.ok()) first_error = s;
        failed.store(true);
        return;
      }
    }
  };
  std::vector<std::thread> workers;
  const size_t count = std::min<size_t>(kDiskPrefetchWorkers, batches.size());
  for (size_t t = 0; t < count; ++t) workers.emplace_back(worker);
  for (std::thread& t : workers) t.join();
  absl::MutexLock lock(&mu);
  if (!first_error.ok()) return first_error;
  return result;
}

absl::StatusOr<uint64_t> DecompressDiskRanges(const RandomAccessFile& disk,
                                              const std::vector<ByteRange>& ranges,
                                              uint64_t max_bytes, const std::atomic<bool>& stop) {
  uint64_t warmed = 0;
  for (const ByteRange& r : ranges) {
    if (stop.load() || warmed + r.length > max_bytes) break;
    if (absl::Status s = disk.WarmCache(r.offset, r.length); !s.ok()) return s;
    warmed += r.length;
  }
  return warmed;
}

absl::StatusOr<size_t> ReadSmallRangesThroughDevice(const std::string& device_path,
                                                    const std::vector<ByteRange>& ranges,
                                                    uint64_t max_length,
                                                    const std::atomic<bool>& stop) {
  UniqueFd fd(::open(device_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    const int err = errno;
    return absl::Status(DeviceErrnoCode(err),
                        absl::StrCat("open ", device_path, ": ", strerror(err)));
  }
  // Readahead would read, and have blockd fetch, more than the trace holds.
  (void)::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_RANDOM);
  std::string buf(max_length, '\0');
  size_t done = 0;
  for (const ByteRange& r : ranges) {
    if (stop.load()) break;
    if (r.length > max_length) continue;
    if (::pread(fd.get(), buf.data(), r.length, static_cast<off_t>(r.offset)) < 0) {
      const int err = errno;
      return absl::Status(DeviceErrnoCode(err), absl::StrCat("read ", device_path, " at ", r.offset,
                                                             ": ", strerror(err)));
    }
    ++done;
  }
  return done;
}

}  // namespace dadi::blockstore::blockd
