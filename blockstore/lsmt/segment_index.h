// In-memory LSMT indexes. SegmentMap is the mutable one (overwrite semantics, for writable
// layers and for merging); SegmentIndex is the frozen sorted array that reads search in
// O(log n). MergeIndexes builds one SegmentIndex for a whole stack, so a lookup costs the same
// whatever the number of layers.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "blockstore/lsmt/lsmt_format.h"

namespace dadi::blockstore {

// Piece of `m` inside sectors [from, to) (which must overlap m).
SegmentMapping ClipMapping(const SegmentMapping& m, uint64_t from, uint64_t to);

class SegmentMap {
 public:
  // Maps m.offset..m.end() to `m`, replacing whatever mapped those sectors before. Adjacent
  // mappings continuing each other (same tag and zeroed, contiguous moffset) are joined.
  void Insert(const SegmentMapping& m);
  size_t size() const { return map_.size(); }
  std::vector<SegmentMapping> ToVector() const;
  // Mapped pieces of sectors [offset, offset + length), clipped, in order (appended to out).
  void Lookup(uint64_t offset, uint64_t length, std::vector<SegmentMapping>* out) const;

 private:
  std::map<uint64_t, SegmentMapping> map_;  // keyed by offset
};

class SegmentIndex {
 public:
  SegmentIndex() = default;
  // Checks that `mappings` are sorted, non-overlapping and non-empty each; INVALID_ARGUMENT
  // naming `what` and the entry otherwise.
  static absl::StatusOr<SegmentIndex> FromSorted(std::vector<SegmentMapping> mappings,
                                                 absl::string_view what);
  // Appends the mapped pieces of sectors [offset, offset + length), clipped, in order.
  void Lookup(uint64_t offset, uint64_t length, std::vector<SegmentMapping>* out) const;
  const std::vector<SegmentMapping>& mappings() const { return mappings_; }
  size_t size() const { return mappings_.size(); }

 private:
  explicit SegmentIndex(std::vector<SegmentMapping> m) : mappings_(std::move(m)) {}
  friend SegmentIndex MergeIndexes(std::span<const SegmentIndex* const> layers);
  std::vector<SegmentMapping> mappings_;
};

// The merged view of a stack of indexes, bottom first: a sector maps to the topmost layer that
// maps it; each result's tag is that layer's position in `layers`. At most 256 layers.
SegmentIndex MergeIndexes(std::span<const SegmentIndex* const> layers);

}  // namespace dadi::blockstore
