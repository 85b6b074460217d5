#include "blockstore/lsmt/sealed_layer.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace dadi::blockstore {

absl::StatusOr<std::shared_ptr<const SealedLayer>> SealedLayer::Open(
    std::shared_ptr<const RandomAccessFile> file) {
  const std::string name = file->Name();
  const uint64_t size = file->Size();
  constexpr uint64_t kHL = LsmtHeader::kEncodedLength;
  if (size < 2 * kHL) {
    return absl::DataLossError(absl::StrCat(name, ": LSMT layer too short (", size,
                                            " bytes; header and trailer need ", 2 * kHL, ")"));
  }
  std::shared_ptr<SealedLayer> layer(new SealedLayer());
  std::string buf(kHL, '\0');
  if (absl::Status s = PreadExact(*file, size - kHL, kHL, buf.data(), "LSMT trailer"); !s.ok()) {
    return s;
  }
  LsmtHeader& t = layer->trailer_;
  if (absl::Status s = t.DecodeFrom(buf, name); !s.ok()) return s;
  if (t.is_header() || !t.is_data() || !t.sealed()) {
    return absl::DataLossError(absl::StrCat(name, ": LSMT trailer flags = ", t.flags,
                                            " are not those of a sealed data-file trailer"));
  }
  if (t.virtual_size % kSectorSize != 0 ||
      t.virtual_size / kSectorSize > SegmentMapping::kMaxOffset) {
    return absl::DataLossError(
        absl::StrCat(name, ": LSMT field virtual_size = ", t.virtual_size, " is invalid"));
  }
  const uint64_t index_limit = size - kHL;
  if (t.index_size > (index_limit - kHL) / SegmentMapping::kEncodedLength) {
    return absl::DataLossError(absl::StrCat(name, ": LSMT field index_size = ", t.index_size,
                                            " does not fit in a file of ", size, " bytes"));
  }
  if (t.index_offset < kHL || t.index_offset % kSectorSize != 0 ||
      t.index_offset > index_limit - t.index_size * SegmentMapping::kEncodedLength) {
    return absl::DataLossError(absl::StrCat(name, ": LSMT field index_offset = ", t.index_offset,
                                            " with index_size = ", t.index_size,
                                            " is outside the file (size ", size, ")"));
  }
  if (t.index_size > kMaxIndexEntries) {
    return absl::DataLossError(absl::StrCat(name, ": LSMT field index_size = ", t.index_size,
                                            " exceeds the limit of ", kMaxIndexEntries));
  }
  const uint64_t vsectors = t.virtual_size / kSectorSize;
  const uint64_t data_first = kHL / kSectorSize, data_end = t.index_offset / kSectorSize;
  std::vector<SegmentMapping> entries;
  // Read in chunks: the index may sit in a ZFile whose decompressed size the input controls, so
  // memory grows with the entries actually decoded, not with a claimed count.
  constexpr uint64_t kChunkEntries = 1 << 16;
  std::string raw;
  for (uint64_t first = 0; first < t.index_size; first += kChunkEntries) {
    const uint64_t n = std::min(kChunkEntries, t.index_size - first);
    raw.resize(n * SegmentMapping::kEncodedLength);
    if (absl::Status s = PreadExact(*file, t.index_offset + first * SegmentMapping::kEncodedLength,
                                    raw.size(), raw.data(), "LSMT index");
        !s.ok()) {
      return s;
    }
    for (uint64_t k = 0; k < n; ++k) {
      const uint64_t i = first + k;
      SegmentMapping m =
          SegmentMapping::DecodeFrom(raw.data() + k * SegmentMapping::kEncodedLength);
      if (m.is_padding()) continue;
      m.tag = 0;  // runtime only
      if (m.length == 0 || m.end() > vsectors) {
        return absl::DataLossError(
            absl::StrCat(name, ": LSMT index entry ", i, " (offset ", m.offset, ", length ",
                         m.length, ") is empty or past virtual_size ", t.virtual_size));
      }
      if (!m.zeroed && (m.moffset < data_first || m.moffset + m.length > data_end)) {
        return absl::DataLossError(absl::StrCat(name, ": LSMT index entry ", i, " moffset ",
                                                m.moffset, " length ", m.length,
                                                " is outside the data section"));
      }
      if (!entries.empty() && m.offset < entries.back().end()) {
        return absl::DataLossError(absl::StrCat(
            name, ": LSMT index entry ", i, " at sector ", m.offset,
            " overlaps or precedes the previous entry ending at ", entries.back().end()));
      }
      entries.push_back(m);
    }
  }
  absl::StatusOr<SegmentIndex> index = SegmentIndex::FromSorted(std::move(entries), name);
  if (!index.ok()) return absl::DataLossError(index.status().message());
  layer->index_ = *std::move(index);
  layer->file_ = std::move(file);
  return std::shared_ptr<const SealedLayer>(std::move(layer));
}

uint64_t SealedLayer::data_bytes() const {
  uint64_t n = 0;
  for (const SegmentMapping& m : index_.mappings()) {
    if (!m.zeroed) n += uint64_t{m.length} * kSectorSize;
  }
  return n;
}

}  // namespace dadi::blockstore
