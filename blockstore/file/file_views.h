// RandomAccessFile adapters that wrap another file: a window onto part of it, a counter of the
// reads made through it, and a view that serves some ranges from memory. They let the layer blob
// open a ZFile inside a tar entry and report what opening cost, on any file implementation.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "blockstore/file/file.h"

namespace dadi::blockstore {

// Bytes [offset, offset + size) of `base`, seen as a file of its own. Fails if the window does
// not lie inside `base`. Thread-safe like `base`. Invalidate forwards the range, moved into
// `base` (and clipped to the window).
absl::StatusOr<std::shared_ptr<RandomAccessFile>> NewSliceFile(
    std::shared_ptr<const RandomAccessFile> base, uint64_t offset, uint64_t size);

// Counts the Pread calls that reach the wrapped file and the bytes they returned.
class CountingFile final : public RandomAccessFile {
 public:
  explicit CountingFile(std::shared_ptr<const RandomAccessFile> base) : base_(std::move(base)) {}
  uint64_t Size() const override { return base_->Size(); }
  absl::StatusOr<size_t> Pread(uint64_t offset, size_t n, char* buf) const override;
  std::string Name() const override { return base_->Name(); }
  absl::Status Invalidate(uint64_t offset, uint64_t n) const override {
    return base_->Invalidate(offset, n);
  }
  void Locate(uint64_t offset, uint64_t n, std::vector<FileExtent>* out) const override {
    base_->Locate(offset, n, out);
  }

  uint64_t reads() const { return reads_.load(std::memory_order_relaxed); }
  uint64_t bytes() const { return bytes_.load(std::memory_order_relaxed); }

 private:
  std::shared_ptr<const RandomAccessFile> base_;
  mutable std::atomic<uint64_t> reads_{0};
  mutable std::atomic<uint64_t> bytes_{0};
};

// Serves reads that fall entirely inside one of a few ranges fetched ahead (a blob's head and
// tail, where all of its metadata lives) from memory; everything else goes to `base`.
// Invalidate forgets the prefetched ranges it overlaps (their bytes may be the bad copy) and
// forwards to `base`.
class PrefetchedFile final : public RandomAccessFile {
 public:
  explicit PrefetchedFile(std::shared_ptr<const RandomAccessFile> base) : base_(std::move(base)) {}
  // Reads [offset, offset + n) of base (clipped to its size) with one Pread and keeps it.
  absl::Status Preload(uint64_t offset, size_t n);
  // Forgets the prefetched ranges (their bytes have been parsed).
  void Clear() {
    absl::MutexLock lock(&mu_);
    ranges_.clear();
  }
  uint64_t Size() const override { return base_->Size(); }
  absl::StatusOr<size_t> Pread(uint64_t offset, size_t n, char* buf) const override;
  std::string Name() const override { return base_->Name(); }
  absl::Status Invalidate(uint64_t offset, uint64_t n) const override;
  void Locate(uint64_t offset, uint64_t n, std::vector<FileExtent>* out) const override {
    base_->Locate(offset, n, out);
  }

 private:
  struct Range {
    uint64_t offset;
    std::string data;
  };
  std::shared_ptr<const RandomAccessFile> base_;
  // Invalidate may drop ranges while other threads read.
  mutable absl::Mutex mu_;
  mutable std::vector<Range> ranges_ ABSL_GUARDED_BY(mu_);
};

}  // namespace dadi::blockstore
