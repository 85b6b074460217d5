// A writable LSMT layer on local files: an append-only data file (4096-byte header, then data)
// and an index file (4096-byte header, then raw 16-byte entries in write order; the last write
// of a sector wins). Commit streams it out as a sealed layer. WritableStack puts one on top of a
// read-only LayerStack.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "blockstore/file/file.h"
#include "blockstore/file/unique_fd.h"
#include "blockstore/lsmt/layer_stack.h"
#include "blockstore/lsmt/sealed_layer_writer.h"
#include "blockstore/lsmt/segment_index.h"

namespace dadi::blockstore {

// Thread-safe: writes are serialized; reads run concurrently with each other.
class WritableLayer {
 public:
  // Creates (truncates) both files.
  static absl::StatusOr<std::unique_ptr<WritableLayer>> Create(const std::string& data_path,
                                                               const std::string& index_path,
                                                               LayerInfo info);
  // Reopens a layer made by Create (dadi's or overlaybd's), replaying its index file.
  static absl::StatusOr<std::unique_ptr<WritableLayer>> Open(const std::string& data_path,
                                                             const std::string& index_path);

  // Writes `data` at virtual byte `offset`; both multiples of 512 (INVALID_ARGUMENT otherwise).
  absl::Status Write(uint64_t offset, absl::string_view data);
  // Makes [offset, offset + length) read as zeros without storing data.
  absl::Status Discard(uint64_t offset, uint64_t length);
  // Reads this layer alone: unmapped bytes read as zeros.
  absl::StatusOr<size_t> Pread(uint64_t offset, size_t n, char* buf) const;
  // Appends the mapped (sector) pieces of [offset, offset + length) sectors, clipped.
  void Lookup(uint64_t offset_sectors, uint64_t length_sectors,
              std::vector<SegmentMapping>* out) const;
  // Flushes buffered index entries and fsyncs both files.
  absl::Status Sync();
  // Writes the live data in offset order and the index as a sealed layer into `out` (not
  // closed). The layer stays usable.
  absl::Status Commit(WritableFile* out) const;

  const LayerInfo& info() const { return info_; }
  uint64_t virtual_size() const { return info_.virtual_size; }
  size_t segment_count() const;

 private:
  WritableLayer(UniqueFd data, UniqueFd index, std::string data_path, LayerInfo info)
      : data_fd_(std::move(data)),
        index_fd_(std::move(index)),
        data_path_(std::move(data_path)),
        info_(std::move(info)) {}
  absl::Status CheckRange(uint64_t offset, uint64_t length) const;
  absl::Status FlushIndexLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RecordLocked(const SegmentMapping& m) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  UniqueFd data_fd_;
  UniqueFd index_fd_;
  std::string data_path_;
  LayerInfo info_;
  mutable absl::Mutex mu_;
  SegmentMap map_ ABSL_GUARDED_BY(mu_);
  uint64_t data_end_ ABSL_GUARDED_BY(mu_) = 0;  // bytes, end of the data file
  std::string pending_index_ ABSL_GUARDED_BY(mu_);
};

// A writable layer over a read-only stack: reads see the top layer first, then the stack.
// Unaligned writes read-modify-write the sectors they touch.
class WritableStack final : public RandomAccessFile {
 public:
  WritableStack(std::shared_ptr<const RandomAccessFile> lower, WritableLayer* top)
      : lower_(std::move(lower)), top_(top) {}
  uint64_t Size() const override { return top_->virtual_size(); }
  absl::StatusOr<size_t> Pread(uint64_t offset, size_t n, char* buf) const override;
  std::string Name() const override { return "writable stack"; }
  absl::Status Write(uint64_t offset, absl::string_view data);

 private:
  std::shared_ptr<const RandomAccessFile> lower_;  // may be null: nothing below
  WritableLayer* top_;
};

}  // namespace dadi::blockstore
