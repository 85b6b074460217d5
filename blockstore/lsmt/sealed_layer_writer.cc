#include "blockstore/lsmt/sealed_layer_writer.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace dadi::blockstore {

absl::StatusOr<std::unique_ptr<SealedLayerWriter>> SealedLayerWriter::Create(WritableFile* out,
                                                                             LayerInfo info) {
  if (info.virtual_size % kSectorSize != 0 ||
      info.virtual_size / kSectorSize > SegmentMapping::kMaxOffset) {
    return absl::InvalidArgumentError(
        absl::StrCat("LSMT virtual size ", info.virtual_size, " is not a valid multiple of 512"));
  }
  std::unique_ptr<SealedLayerWriter> w(new SealedLayerWriter(out, std::move(info)));
  LsmtHeader h;
  h.flags = LsmtHeader::kFlagIsHeader | LsmtHeader::kFlagTypeData | LsmtHeader::kFlagSealed;
  h.virtual_size = w->info_.virtual_size;
  h.uuid = w->info_.uuid;
  h.parent_uuid = w->info_.parent_uuid;
  h.user_tag = w->info_.user_tag;
  std::string buf;
  h.EncodeTo(&buf);
  if (absl::Status s = out->Append(buf); !s.ok()) return s;
  return w;
}

absl::Status SealedLayerWriter::CheckRange(uint64_t offset, uint64_t length) const {
  if (finished_) return absl::FailedPreconditionError("sealed layer writer finished");
  return CheckWriteRange("LSMT ", offset, length, info_.virtual_size);
}

void SealedLayerWriter::AddMapping(const SegmentMapping& m) {
  if (!mappings_.empty()) {
    SegmentMapping& last = mappings_.back();
    bool joins = last.end() == m.offset && last.zeroed == m.zeroed &&
                 uint64_t{last.length} + m.length <= UINT32_MAX &&
                 (m.zeroed || last.moffset + last.length == m.moffset);
    if (joins) {
      last.length += m.length;
      return;
    }
  }
  mappings_.push_back(m);
}

absl::Status SealedLayerWriter::AddData(uint64_t offset, absl::string_view data) {
  if (absl::Status s = CheckRange(offset, data.size()); !s.ok()) return s;
  if (data.empty()) return absl::OkStatus();
  if (absl::Status s = out_->Append(data); !s.ok()) return s;
  const uint64_t sectors = data.size() / kSectorSize;
  SegmentMapping first;
  first.offset = offset / kSectorSize;
  first.moffset = LsmtHeader::kEncodedLength / kSectorSize + data_sectors_;
  ForEachMappingPiece(first, sectors, [&](const SegmentMapping& m) { AddMapping(m); });
  data_sectors_ += sectors;
  return absl::OkStatus();
}

absl::Status SealedLayerWriter::AddZeroed(uint64_t offset, uint64_t length) {
  if (absl::Status s = CheckRange(offset, length); !s.ok()) return s;
  SegmentMapping first;
  first.offset = offset / kSectorSize;
  first.zeroed = true;
  ForEachMappingPiece(first, length / kSectorSize, [&](const SegmentMapping& m) { AddMapping(m); });
  return absl::OkStatus();
}

absl::Status SealedLayerWriter::Finish() {
  if (finished_) return absl::FailedPreconditionError("sealed layer writer finished");
  finished_ = true;
  std::stable_sort(
      mappings_.begin(), mappings_.end(),
      [](const SegmentMapping& a, const SegmentMapping& b) { return a.offset < b.offset; });
  for (size_t i = 1; i < mappings_.size(); ++i) {
    if (mappings_[i].offset < mappings_[i - 1].end()) {
      return absl::InvalidArgumentError(
          absl::StrCat(out_->Name(), ": LSMT ranges overlap at sector ", mappings_[i].offset));
    }
  }
  std::string index;
  for (const SegmentMapping& m : mappings_) EncodeMappingSplit(m, &index);
  // Pad the index to whole 4 KiB with overlaybd's padding entries, as its own writer does.
  SegmentMapping pad;
  pad.offset = SegmentMapping::kInvalidOffset;
  while (index.size() % LsmtHeader::kEncodedLength != 0) {
    char buf[SegmentMapping::kEncodedLength];
    pad.EncodeTo(buf);
    index.append(buf, sizeof(buf));
  }
  LsmtHeader t;
  t.flags = LsmtHeader::kFlagTypeData | LsmtHeader::kFlagSealed;
  t.index_offset = LsmtHeader::kEncodedLength + data_sectors_ * kSectorSize;
  t.index_size = index.size() / SegmentMapping::kEncodedLength;
  t.virtual_size = info_.virtual_size;
  t.uuid = info_.uuid;
  t.parent_uuid = info_.parent_uuid;
  t.user_tag = info_.user_tag;
  t.EncodeTo(&index);
  return out_->Append(index);
}

}  // namespace dadi::blockstore
