#include "blockstore/lsmt/segment_index.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace dadi::blockstore {
namespace {

bool Continues(const SegmentMapping& a, const SegmentMapping& b) {
  if (a.end() != b.offset || a.tag != b.tag || a.zeroed != b.zeroed) return false;
  if (uint64_t{a.length} + b.length > UINT32_MAX) return false;
  return a.zeroed || a.moffset + a.length == b.moffset;
}

template <typename It, typename GetMapping>
void LookupSorted(It begin, It end, GetMapping get, uint64_t offset, uint64_t length,
                  std::vector<SegmentMapping>* out) {
  const uint64_t stop = offset + length;
  It it = std::partition_point(begin, end, [&](const auto& e) { return get(e).end() <= offset; });
  for (; it != end && get(*it).offset < stop; ++it) {
    out->push_back(ClipMapping(get(*it), offset, stop));
  }
}

}  // namespace

SegmentMapping ClipMapping(const SegmentMapping& m, uint64_t from, uint64_t to) {
  SegmentMapping p = m;
  if (p.offset < from) {
    uint64_t d = from - p.offset;
    p.offset = from;
    p.length -= static_cast<uint32_t>(d);
    if (!p.zeroed) p.moffset += d;
  }
  if (p.end() > to) p.length = static_cast<uint32_t>(to - p.offset);
  return p;
}

void SegmentMap::Insert(const SegmentMapping& m) {
  if (m.length == 0) return;
  const uint64_t from = m.offset, to = m.end();
  auto it = map_.upper_bound(from);
  if (it != map_.begin()) {
    auto prev = std::prev(it);
    if (prev->second.end() > from) it = prev;
  }
  while (it != map_.end() && it->second.offset < to) {
    SegmentMapping old = it->second;
    it = map_.erase(it);
    if (old.offset < from) map_.emplace(old.offset, ClipMapping(old, old.offset, from));
    if (old.end() > to) {
      map_.emplace(to, ClipMapping(old, to, old.end()));
      break;
    }
  }
  SegmentMapping cur = m;
  auto next = map_.lower_bound(from);
  if (next != map_.begin()) {
    auto prev = std::prev(next);
    if (Continues(prev->second, cur)) {
      SegmentMapping joined = prev->second;
      joined.length += cur.length;
      cur = joined;
      map_.erase(prev);
    }
  }
  next = map_.lower_bound(cur.end());
  if (next != map_.end() && Continues(cur, next->second)) {
    cur.length += next->second.length;
    map_.erase(next);
  }
  map_.emplace(cur.offset, cur);
}

std::vector<SegmentMapping> SegmentMap::ToVector() const {
  std::vector<SegmentMapping> v;
  v.reserve(map_.size());
  for (const auto& [k, m] : map_) v.push_back(m);
  return v;
}

void SegmentMap::Lookup(uint64_t offset, uint64_t length, std::vector<SegmentMapping>* out) const {
  if (length == 0) return;
  const uint64_t stop = offset + length;
  auto it = map_.upper_bound(offset);
  if (it != map_.begin() && std::prev(it)->second.end() > offset) --it;
  for (; it != map_.end() && it->second.offset < stop; ++it) {
    out->push_back(ClipMapping(it->second, offset, stop));
  }
}

absl::StatusOr<SegmentIndex> SegmentIndex::FromSorted(std::vector<SegmentMapping> mappings,
                                                      absl::string_view what) {
  uint64_t prev_end = 0;
  for (size_t i = 0; i < mappings.size(); ++i) {
    const SegmentMapping& m = mappings[i];
    if (m.length == 0) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": index entry ", i, " has length 0"));
    }
    if (i > 0 && m.offset < prev_end) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": index entry ", i, " at sector ", m.offset,
                       " overlaps or precedes the previous entry ending at ", prev_end));
    }
    prev_end = m.end();
  }
  return SegmentIndex(std::move(mappings));
}

void SegmentIndex::Lookup(uint64_t offset, uint64_t length,
                          std::vector<SegmentMapping>* out) const {
  if (length == 0) return;
  LookupSorted(
      mappings_.begin(), mappings_.end(),
      [](const SegmentMapping& m) -> const SegmentMapping& { return m; }, offset, length, out);
}

SegmentIndex MergeIndexes(std::span<const SegmentIndex* const> layers) {
  if (layers.empty()) return SegmentIndex();
  if (layers.size() == 1) {
    std::vector<SegmentMapping> v = layers[0]->mappings();
    for (SegmentMapping& m : v) m.tag = 0;
    return SegmentIndex(std::move(v));
  }
  // Bottom to top, each layer overwriting what it maps.
  SegmentMap merged;
  for (size_t i = 0; i < layers.size(); ++i) {
    for (SegmentMapping m : layers[i]->mappings()) {
      m.tag = static_cast<uint8_t>(i);
      merged.Insert(m);
    }
  }
  return SegmentIndex(merged.ToVector());
}

}  // namespace dadi::blockstore
