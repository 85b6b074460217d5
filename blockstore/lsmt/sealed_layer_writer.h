// Streams a sealed LSMT layer into any WritableFile (a local file, or a ZFileWriter): header,
// then data in the order it is added, then the sorted index and the trailer at Finish.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "blockstore/file/file.h"
#include "blockstore/lsmt/lsmt_format.h"

namespace dadi::blockstore {

struct LayerInfo {
  uint64_t virtual_size = 0;  // bytes, multiple of 512
  std::string uuid;
  std::string parent_uuid;
  std::string user_tag;
};

class SealedLayerWriter {
 public:
  // Writes the header to `out` (not owned). INVALID_ARGUMENT for a bad virtual size.
  static absl::StatusOr<std::unique_ptr<SealedLayerWriter>> Create(WritableFile* out,
                                                                   LayerInfo info);
  // Maps `data.size()` bytes at virtual byte `offset` to the data appended now. Offset and size
  // must be multiples of 512 and inside the virtual size; ranges must not overlap earlier ones.
  absl::Status AddData(uint64_t offset, absl::string_view data);
  // Maps [offset, offset + length) as zeroed (no data).
  absl::Status AddZeroed(uint64_t offset, uint64_t length);
  // Sorts and checks the index (INVALID_ARGUMENT on overlap), writes it and the trailer.
  absl::Status Finish();

 private:
  SealedLayerWriter(WritableFile* out, LayerInfo info) : out_(out), info_(std::move(info)) {}
  absl::Status CheckRange(uint64_t offset, uint64_t length) const;
  void AddMapping(const SegmentMapping& m);

  WritableFile* out_;
  LayerInfo info_;
  uint64_t data_sectors_ = 0;  // sectors written after the header
  std::vector<SegmentMapping> mappings_;
  bool finished_ = false;
};

}  // namespace dadi::blockstore
