#include "blockstore/file/stored_ranges.h"

#include <algorithm>

namespace dadi::blockstore {

std::vector<StoredRanges> GroupByFile(const std::vector<FileExtent>& extents) {
  std::vector<StoredRanges> out;
  for (const FileExtent& e : extents) {
    auto it = std::find_if(out.begin(), out.end(),
                           [&](const StoredRanges& g) { return g.file == e.file; });
    if (it == out.end()) it = out.insert(out.end(), StoredRanges{e.file, {}});
    it->ranges.push_back(e.range);
  }
  for (StoredRanges& g : out) {
    std::sort(g.ranges.begin(), g.ranges.end(),
              [](const ByteRange& a, const ByteRange& b) { return a.offset < b.offset; });
    std::vector<ByteRange> merged;
    for (const ByteRange& r : g.ranges) {
      ByteRange* last = merged.empty() ? nullptr : &merged.back();
      if (last != nullptr && r.offset <= last->offset + last->length) {
        last->length = std::max(last->offset + last->length, r.offset + r.length) - last->offset;
      } else {
        merged.push_back(r);
      }
    }
    g.ranges = std::move(merged);
  }
  return out;
}

absl::Status PrefetchStored(const RandomAccessFile& file, const std::vector<ByteRange>& ranges) {
  std::vector<FileExtent> extents;
  for (const ByteRange& r : ranges) file.Locate(r.offset, r.length, &extents);
  for (const StoredRanges& g : GroupByFile(extents)) {
    if (absl::Status s = g.file->Prefetch(g.ranges); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace dadi::blockstore
