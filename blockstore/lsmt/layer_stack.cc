#include "blockstore/lsmt/layer_stack.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace dadi::blockstore {

absl::Status ReadPieces(const std::vector<SegmentMapping>& pieces,
                        const std::vector<const RandomAccessFile*>& files, uint64_t offset,
                        size_t n, char* buf) {
  uint64_t cursor = offset;
  const uint64_t stop = offset + n;
  for (const SegmentMapping& p : pieces) {
    uint64_t from = std::max(offset, p.offset * kSectorSize);
    uint64_t to = std::min(stop, p.end() * kSectorSize);
    if (from >= to) continue;
    if (from > cursor) std::memset(buf + (cursor - offset), 0, from - cursor);
    if (p.zeroed) {
      std::memset(buf + (from - offset), 0, to - from);
    } else {
      uint64_t src = p.moffset * kSectorSize + (from - p.offset * kSectorSize);
      if (absl::Status s =
              PreadExact(*files[p.tag], src, to - from, buf + (from - offset), "LSMT data");
          !s.ok()) {
        return s;
      }
    }
    cursor = to;
  }
  if (cursor < stop) std::memset(buf + (cursor - offset), 0, stop - cursor);
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const LayerStack>> LayerStack::Create(
    std::vector<std::shared_ptr<const SealedLayer>> layers) {
  if (layers.empty() || layers.size() > kMaxLayers) {
    return absl::InvalidArgumentError(
        absl::StrCat("a layer stack needs 1 to ", kMaxLayers, " layers, got ", layers.size()));
  }
  std::shared_ptr<LayerStack> stack(new LayerStack());
  std::vector<const SegmentIndex*> indexes;
  for (const auto& l : layers) {
    indexes.push_back(&l->index());
    stack->files_.push_back(&l->file());
  }
  stack->index_ = MergeIndexes(indexes);
  stack->size_ = layers.back()->virtual_size();
  stack->layers_ = std::move(layers);
  return std::shared_ptr<const LayerStack>(std::move(stack));
}

absl::StatusOr<size_t> LayerStack::Pread(uint64_t offset, size_t n, char* buf) const {
  if (offset >= size_ || n == 0) return 0;
  size_t want = static_cast<size_t>(std::min<uint64_t>(n, size_ - offset));
  uint64_t first = offset / kSectorSize;
  uint64_t last = (offset + want + kSectorSize - 1) / kSectorSize;
  std::vector<SegmentMapping> pieces;
  index_.Lookup(first, last - first, &pieces);
  if (absl::Status s = ReadPieces(pieces, files_, offset, want, buf); !s.ok()) return s;
  return want;
}

template <typename Fn>
absl::Status LayerStack::ForEachMapped(uint64_t offset, uint64_t n, const Fn& fn) const {
  if (offset >= size_ || n == 0) return absl::OkStatus();
  const uint64_t stop = offset + std::min<uint64_t>(n, size_ - offset);
  const uint64_t first = offset / kSectorSize;
  const uint64_t last = (stop + kSectorSize - 1) / kSectorSize;
  std::vector<SegmentMapping> pieces;
  index_.Lookup(first, last - first, &pieces);
  for (const SegmentMapping& p : pieces) {
    uint64_t from = std::max(offset, p.offset * kSectorSize);
    uint64_t to = std::min(stop, p.end() * kSectorSize);
    if (from >= to || p.zeroed) continue;
    absl::Status s =
        fn(*files_[p.tag], p.moffset * kSectorSize + (from - p.offset * kSectorSize), to - from);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

void LayerStack::Locate(uint64_t offset, uint64_t n, std::vector<FileExtent>* out) const {
  (void)ForEachMapped(offset, n, [out](const RandomAccessFile& f, uint64_t at, uint64_t len) {
    f.Locate(at, len, out);
    return absl::OkStatus();
  });
}

absl::Status LayerStack::WarmCache(uint64_t offset, uint64_t n) const {
  return ForEachMapped(offset, n, [](const RandomAccessFile& f, uint64_t at, uint64_t len) {
    return f.WarmCache(at, len);
  });
}

std::string LayerStack::Name() const {
  return absl::StrCat("stack of ", layers_.size(), " layers (top ", layers_.back()->file().Name(),
                      ")");
}

}  // namespace dadi::blockstore
