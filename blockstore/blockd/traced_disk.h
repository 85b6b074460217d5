// A device's disk that remembers what it served: every read the kernel makes through the
// device is recorded as a startup trace (blockstore/remote/startup_trace.h), which `dadi trace
// save` takes from dadi-blockd's GetTrace and publishes with the image.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "blockstore/file/file.h"
#include "blockstore/remote/startup_trace.h"

namespace dadi::blockstore::blockd {

class TracedDisk final : public RandomAccessFile {
 public:
  explicit TracedDisk(std::shared_ptr<const RandomAccessFile> disk)
      : disk_(std::move(disk)), recorder_(disk_->Size()) {}

  uint64_t Size() const override { return disk_->Size(); }
  absl::StatusOr<size_t> Pread(uint64_t offset, size_t n, char* buf) const override {
    absl::StatusOr<size_t> got = disk_->Pread(offset, n, buf);
    // Only what was served: a failed read is retried by the kernel and recorded then. Once
    // the recorder is full, reads pass without taking the lock.
    if (got.ok() && *got > 0 && !full_.load(std::memory_order_relaxed) &&
        paused_.load(std::memory_order_relaxed) == 0) {
      absl::MutexLock lock(&mu_);
      recorder_.Record(offset, *got);
      if (recorder_.full()) full_.store(true, std::memory_order_relaxed);
    }
    return got;
  }
  std::string Name() const override { return disk_->Name(); }
  absl::Status Invalidate(uint64_t offset, uint64_t n) const override {
    return disk_->Invalidate(offset, n);
  }
  void Locate(uint64_t offset, uint64_t n, std::vector<FileExtent>* out) const override {
    disk_->Locate(offset, n, out);
  }

  // While paused (by any caller), reads are not recorded: blockd's own reads through the
  // device, such as the walk that maps a trace to files, are not the container's.
  void PauseRecording() const { paused_.fetch_add(1); }
  void ResumeRecording() const { paused_.fetch_sub(1); }

  // The trace so far.
  StartupTrace Trace() const {
    absl::MutexLock lock(&mu_);
    return recorder_.trace();
  }

 private:
  const std::shared_ptr<const RandomAccessFile> disk_;
  mutable absl::Mutex mu_;
  mutable TraceRecorder recorder_ ABSL_GUARDED_BY(mu_);
  mutable std::atomic<bool> full_{false};
  mutable std::atomic<int> paused_{0};
};

}  // namespace dadi::blockstore::blockd
