#include "blockstore/blockd/startup_pack.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "blockstore/file/stored_ranges.h"
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
  std::vector<FileExtent> extents;
  for (const ByteRange& r : ranges) {
    if (r.offset < image.Size()) image.stack().Locate(r.offset, r.length, &extents);
  }
  std::vector<StoredRange> stored;
  for (const StoredRanges& file : GroupByFile(extents)) {
    const OpenLayer* layer = LayerStoredIn(image, file.file);
    if (layer == nullptr) continue;  // not a layer blob (nothing else stores a disk today)
    const RemoteBlob& blob = layer->remote();
    const uint64_t unit = blob.cached()->unit_size();
    const size_t first = stored.size();
    for (const ByteRange& r : file.ranges) {
      const uint64_t start = r.offset / unit * unit;
      const uint64_t end = std::min(blob.Size(), (r.offset + r.length + unit - 1) / unit * unit);
      if (stored.size() > first &&
          stored.back().range.offset + stored.back().range.length >= start) {
        ByteRange& last = stored.back().range;
        last.length = std::max(last.offset + last.length, end) - last.offset;
      } else {
        stored.push_back(StoredRange{layer->spec().digest, ByteRange{start, end - start}});
      }
    }
  }
  return stored;
}

absl::StatusOr<PackFillResult> FillFromPack(const OpenImage& image,
                                            const std::vector<StoredRange>& stored,
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
    ++result.blobs;
  }
  return result;
}

}  // namespace dadi::blockstore::blockd
