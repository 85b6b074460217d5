// RandomAccessFile adapters that wrap another file: a window onto part of it, a counter of the
// reads made through it, and a view that serves some ranges from memory. They let the layer blob
// open a ZFile inside a tar entry and report what opening cost, on any file implementation.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "blockstore/file/file.h"

namespace dadi::blockstore {

// Bytes [offset, offset + size) of `base`, seen as a file of its own. Fails if the window does
// not lie inside `base`. Thread-safe like `base`.
absl::StatusOr<std::shared_ptr<RandomAccessFile>> NewSliceFile(
    std::shared_ptr<const RandomAccessFile> base, uint64_t offset, uint64_t size);

// Counts the Pread calls that reach the wrapped file and the bytes they returned.
class CountingFile final : public RandomAccessFile {
 public:
  explicit CountingFile(std::shared_ptr<const RandomAccessFile> base) : base_(std::move(base)) {}
  uint64_t Size() const override { return base_->Size(); }
  absl::StatusOr<size_t> Pread(uint64_t offset, size_t n, char* buf) const override;
  std::string Name() const override { return base_->Name(); }

  uint64_t reads() const { return reads_.load(std::memory_order_relaxed); }
  uint64_t bytes() const { return bytes_.load(std::memory_order_relaxed); }

 private:
  std::shared_ptr<const RandomAccessFile> base_;
  mutable std::atomic<uint64_t> reads_{0};
  mutable std::atomic<uint64_t> bytes_{0};
};

// Serves reads that fall entirely inside one of a few ranges fetched ahead (a blob's head and
// tail, where all of its metadata lives) from memory; everything else goes to `base`.
class PrefetchedFile final : public RandomAccessFile {
 public:
  explicit PrefetchedFile(std::shared_ptr<const RandomAccessFile> base) : base_(std::move(base)) {}
  // Reads [offset, offset + n) of base (clipped to its size) with one Pread and keeps it. Not
  // thread-safe: call before sharing the file.
  absl::Status Prefetch(uint64_t offset, size_t n);
  // Forgets the prefetched ranges (their bytes have been parsed). Not thread-safe either.
  void Clear() { ranges_.clear(); }
  uint64_t Size() const override { return base_->Size(); }
  absl::StatusOr<size_t> Pread(uint64_t offset, size_t n, char* buf) const override;
  std::string Name() const override { return base_->Name(); }

 private:
  struct Range {
    uint64_t offset;
    std::string data;
  };
  std::shared_ptr<const RandomAccessFile> base_;
  std::vector<Range> ranges_;
};

}  // namespace dadi::blockstore
