// Reader of a sealed LSMT layer: header (4096) | data | index | trailer (4096). Only the trailer
// and the index are read at open. Immutable after Open, so safe to share across threads.
#pragma once

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "blockstore/file/file.h"
#include "blockstore/lsmt/lsmt_format.h"
#include "blockstore/lsmt/segment_index.h"

namespace dadi::blockstore {

class SealedLayer {
 public:
  // Most index entries a layer may have (16 bytes each on disk): a bound on memory for layers
  // whose index comes out of a ZFile. overlaybd layers have far fewer.
  static constexpr uint64_t kMaxIndexEntries = uint64_t{1} << 24;

  // Reads the trailer (must be a sealed data-file trailer) and the index; checks every entry
  // (sorted, non-overlapping, inside the virtual size and the data section). DATA_LOSS naming
  // the file and field on failure.
  static absl::StatusOr<std::shared_ptr<const SealedLayer>> Open(
      std::shared_ptr<const RandomAccessFile> file);

  const LsmtHeader& trailer() const { return trailer_; }
  const SegmentIndex& index() const { return index_; }
  uint64_t virtual_size() const { return trailer_.virtual_size; }
  const RandomAccessFile& file() const { return *file_; }
  const std::shared_ptr<const RandomAccessFile>& shared_file() const { return file_; }
  // Bytes of mapped data (non-zeroed sectors) in this layer.
  uint64_t data_bytes() const;

 private:
  SealedLayer() = default;
  std::shared_ptr<const RandomAccessFile> file_;
  LsmtHeader trailer_;
  SegmentIndex index_;
};

}  // namespace dadi::blockstore
