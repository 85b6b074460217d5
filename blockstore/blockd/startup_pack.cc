#include "blockstore/blockd/startup_pack.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "blockstore/remote/remote_blob.h"

namespace dadi::blockstore::blockd {
namespace {

// The open layer of `image` whose remote blob is `file`, or null.
const OpenLayer* LayerStoredIn(const OpenImage& image, const RandomAccessFile* file) {
  for (const auto& layer : image.layers()) {
    if (&layer->remote() == file) return layer.get();
  }
  return nullptr;
}

// One stored range of a blob and where its bytes sit in the pack.
struct PackPiece {
  ByteRange range;
  uint64_t pack_offset = 0;
};

}  // namespace

std::vector<StoredRange> LocateStoredRanges(const OpenImage& image,
                                            const std::vector<ByteRange>& ranges) {
  std::vector<StoredRange> stored;
  std::map<const OpenLayer*, std::set<uint64_t>> taken;  // units already in `stored`
  std::vector<FileExtent> extents;
  uint64_t bytes = 0;
  for (const ByteRange& r : ranges) {
    // Within what a trace may hold and packs may carry: the first needed bytes, the rest is
    // fetched by ranges as before.
    if (stored.size() >= kMaxStartupTraceRanges || bytes >= kMaxStartupPackBytes) break;
    if (r.offset >= image.Size()) continue;
    extents.clear();
    image.stack().Locate(r.offset, r.length, &extents);
    for (const FileExtent& e : extents) {
      const OpenLayer* layer = LayerStoredIn(image, e.file);
      if (layer == nullptr || e.range.length == 0) continue;  // only layer blobs store a disk
      const RemoteBlob& blob = layer->remote();
      const uint64_t unit = blob.cached()->unit_size();
      std::set<uint64_t>& units = taken[layer];
      const uint64_t last = (e.range.offset + e.range.length - 1) / unit;
      for (uint64_t u = e.range.offset / unit; u <= last; ++u) {
        if (!units.insert(u).second) continue;
        const uint64_t start = u * unit, end = std::min(blob.Size(), start + unit);
        if (start >= end) continue;
        StoredRange* prev = stored.empty() ? nullptr : &stored.back();
        if (prev != nullptr && prev->blob == layer->spec().digest &&
            prev->range.offset + prev->range.length == start &&
            prev->range.length + (end - start) <= kMaxStartupTraceRange) {
          prev->range.length += end - start;
        } else if (stored.size() < kMaxStartupTraceRanges) {
          stored.push_back(StoredRange{layer->spec().digest, ByteRange{start, end - start}});
        } else {
          break;
        }
        bytes += end - start;
      }
    }
  }
  return stored;
}

absl::StatusOr<PackFillResult> FillFromPack(const OpenImage& image,
                                            absl::Span<const StoredRange> stored,
                                            absl::string_view pack, const std::atomic<bool>& stop) {
  if (StoredBytes(stored) != pack.size()) {
    return absl::InvalidArgumentError(absl::StrCat("startup pack: ", pack.size(),
                                                   " bytes for stored ranges of ",
                                                   StoredBytes(stored), " bytes"));
  }
  // Check everything first: a pack for another image stores nothing.
  std::map<const OpenLayer*, std::vector<PackPiece>> pieces;
  uint64_t at = 0;
  for (const StoredRange& s : stored) {
    const OpenLayer* layer = nullptr;
    for (const auto& l : image.layers()) {
      if (l->spec().digest == s.blob) layer = l.get();
    }
    if (layer == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("startup pack: ", s.blob, " is not a layer of the image"));
    }
    if (s.range.offset >= layer->remote().Size() ||
        s.range.length > layer->remote().Size() - s.range.offset) {
      return absl::InvalidArgumentError(absl::StrCat("startup pack: [", s.range.offset, ", +",
                                                     s.range.length, ") is outside ", s.blob, " (",
                                                     layer->remote().Size(), " bytes)"));
    }
    pieces[layer].push_back(PackPiece{s.range, at});
    at += s.range.length;
  }
  // Sorted by offset for the lookups below. Overlapping pieces (a hand-made trace) are fine:
  // a unit that no single piece holds whole is fetched from the registry.
  for (auto& [layer, list] : pieces) {
    std::sort(list.begin(), list.end(), [](const PackPiece& a, const PackPiece& b) {
      return a.range.offset < b.range.offset;
    });
  }
  PackFillResult result;
  result.pack_bytes = pack.size();
  for (const auto& [layer, list] : pieces) {
    if (stop) return absl::CancelledError("startup pack: stopped");
    std::vector<ByteRange> ranges;
    ranges.reserve(list.size());
    for (const PackPiece& p : list) ranges.push_back(p.range);
    // The piece holding [offset, offset + n) whole, copied out.
    auto source = [&list, pack](uint64_t offset, size_t n, char* buf) {
      auto it =
          std::upper_bound(list.begin(), list.end(), offset,
                           [](uint64_t off, const PackPiece& p) { return off < p.range.offset; });
      if (it == list.begin()) return false;
      --it;
      const uint64_t skip = offset - it->range.offset;
      if (skip > it->range.length || n > it->range.length - skip) return false;
      std::memcpy(buf, pack.data() + it->pack_offset + skip, n);
      return true;
    };
    if (absl::Status s = layer->remote().PrefetchFrom(ranges, source); !s.ok()) return s;
  }
  return result;
}

}  // namespace dadi::blockstore::blockd
