// What to do with the extents RandomAccessFile::Locate finds: group them per storing file, and
// prefetch the stored bytes behind ranges of a view in one go.
#pragma once

#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "blockstore/file/file.h"

namespace dadi::blockstore {

// The ranges of one storing file, sorted, with overlapping or touching ones merged.
struct StoredRanges {
  const RandomAccessFile* file = nullptr;
  std::vector<ByteRange> ranges;
};

// Groups `extents` per file, files in the order they first appear.
std::vector<StoredRanges> GroupByFile(const std::vector<FileExtent>& extents);

// Locates `ranges` of `file` and has each file that stores them Prefetch its part, in one call
// per storing file (a remote blob: one multi-range request for a few ranges). Returns the first
// error.
absl::Status PrefetchStored(const RandomAccessFile& file, const std::vector<ByteRange>& ranges);

}  // namespace dadi::blockstore
