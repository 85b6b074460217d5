// The merged read view of a stack of sealed layers (bottom first, at most 256): the topmost
// layer mapping a sector wins, unmapped sectors read as zeros. The merged index is built once,
// so a read costs one binary search whatever the number of layers. Immutable, thread-safe.
#pragma once

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "blockstore/file/file.h"
#include "blockstore/lsmt/sealed_layer.h"
#include "blockstore/lsmt/segment_index.h"

namespace dadi::blockstore {

// Reads the pieces of [offset, offset + n) bytes described by `pieces` (sorted, clipped sector
// mappings whose tags select a file in `files`) into buf, zero-filling the gaps.
absl::Status ReadPieces(const std::vector<SegmentMapping>& pieces,
                        const std::vector<const RandomAccessFile*>& files, uint64_t offset,
                        size_t n, char* buf);

class LayerStack final : public RandomAccessFile {
 public:
  static constexpr size_t kMaxLayers = 256;
  // INVALID_ARGUMENT for no layers or more than kMaxLayers.
  static absl::StatusOr<std::shared_ptr<const LayerStack>> Create(
      std::vector<std::shared_ptr<const SealedLayer>> layers_bottom_first);

  // Virtual size of the top layer.
  uint64_t Size() const override { return size_; }
  absl::StatusOr<size_t> Pread(uint64_t offset, size_t n, char* buf) const override;
  std::string Name() const override;
  // The stored bytes of the layers' files that map the range (zeroed and unmapped sectors
  // have none).
  void Locate(uint64_t offset, uint64_t n, std::vector<FileExtent>* out) const override;
  // Warms the layers' files for the parts of the range they map.
  absl::Status WarmCache(uint64_t offset, uint64_t n) const override;

  const SegmentIndex& index() const { return index_; }
  const std::vector<std::shared_ptr<const SealedLayer>>& layers() const { return layers_; }

 private:
  LayerStack() = default;
  // Calls fn(file, offset, length) for each part of the range a layer's file stores (not for
  // unmapped or zeroed sectors), stopping at the first error.
  template <typename Fn>
  absl::Status ForEachMapped(uint64_t offset, uint64_t n, const Fn& fn) const;
  std::vector<std::shared_ptr<const SealedLayer>> layers_;
  std::vector<const RandomAccessFile*> files_;
  SegmentIndex index_;
  uint64_t size_ = 0;
};

}  // namespace dadi::blockstore
