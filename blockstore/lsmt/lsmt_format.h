// LSMT on-disk structures: the 4096-byte header/trailer shared by data files, index files and
// sealed layers, and the 16-byte index entry (SegmentMapping). See docs/formats.md.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace dadi::blockstore {

// LSMT addresses and lengths are in 512-byte sectors.
inline constexpr uint64_t kSectorSize = 512;

class LsmtHeader {
 public:
  static constexpr size_t kEncodedLength = 4096;
  static constexpr uint32_t kStructSize = 390;  // overlaybd's packed struct, stored in `size`
  static constexpr char kMagic0[8] = {'L', 'S', 'M', 'T', 0, 1, 2, 0};
  static constexpr unsigned char kMagic1[16] = {0x65, 0x7E, 0x63, 0xD2, 0x94, 0x44, 0x08, 0x4C,
                                                0xA2, 0xD2, 0xC8, 0xEC, 0x4F, 0xCF, 0xAE, 0x8A};
  static constexpr uint32_t kFlagIsHeader = 1u << 0;
  static constexpr uint32_t kFlagTypeData = 1u << 1;  // clear: an index file
  static constexpr uint32_t kFlagSealed = 1u << 2;
  static constexpr uint32_t kFlagGcLayer = 1u << 3;
  static constexpr uint32_t kFlagSparseRw = 1u << 4;
  static constexpr uint32_t kFlagInfoValid = 1u << 5;
  static constexpr size_t kUuidLength = 37;  // 36 characters and a NUL
  static constexpr size_t kUserTagLength = 256;

  uint32_t flags = 0;
  uint64_t index_offset = 0;  // bytes
  uint64_t index_size = 0;    // number of 16-byte entries
  uint64_t virtual_size = 0;  // bytes
  std::string uuid;           // at most 36 characters
  std::string parent_uuid;
  uint8_t version = 1;
  uint8_t sub_version = 1;
  std::string user_tag;  // at most 255 characters

  bool is_header() const { return flags & kFlagIsHeader; }
  bool is_data() const { return flags & kFlagTypeData; }
  bool sealed() const { return flags & kFlagSealed; }

  // Appends exactly kEncodedLength bytes (strings longer than their field are cut).
  void EncodeTo(std::string* dst) const;
  // Parses kEncodedLength bytes, checking magics, struct size and string termination.
  absl::Status DecodeFrom(absl::string_view input, absl::string_view file);
};

// One index entry: `length` sectors of the virtual disk at `offset` are stored at `moffset` of
// the layer's data (or read as zeros when `zeroed`). `tag` is runtime-only: which layer of a
// stack the mapping came from.
struct SegmentMapping {
  static constexpr size_t kEncodedLength = 16;
  static constexpr uint64_t kMaxOffset = (uint64_t{1} << 50) - 1;
  // overlaybd pads the on-disk index with entries at this offset and length 0.
  static constexpr uint64_t kInvalidOffset = kMaxOffset;
  static constexpr uint32_t kMaxLength = (1u << 14) - 1;  // per on-disk entry
  static constexpr uint64_t kMaxMoffset = (uint64_t{1} << 55) - 1;

  uint64_t offset = 0;
  uint32_t length = 0;  // in memory may exceed kMaxLength; split when encoded
  uint64_t moffset = 0;
  bool zeroed = false;
  uint8_t tag = 0;

  uint64_t end() const { return offset + length; }
  bool is_padding() const { return offset == kInvalidOffset && length == 0; }

  // Encodes one entry; requires length <= kMaxLength, offset <= kMaxOffset, moffset <= kMaxMoffset.
  void EncodeTo(char* dst) const;
  static SegmentMapping DecodeFrom(const char* src);
  bool operator==(const SegmentMapping& o) const = default;
};

// Appends the on-disk entries of `m`, split into pieces of at most kMaxLength sectors (tag 0).
void EncodeMappingSplit(const SegmentMapping& m, std::string* dst);

// Calls emit(piece) for the in-memory mappings of `sectors` sectors starting as `first` does
// (its offset, moffset and zeroed; its length is ignored), split so that each length fits in 31
// bits and two joined pieces still fit the 32-bit field.
template <typename Emit>
void ForEachMappingPiece(const SegmentMapping& first, uint64_t sectors, Emit&& emit) {
  for (uint64_t done = 0; done < sectors;) {
    const uint64_t n = sectors - done < UINT32_MAX / 2 ? sectors - done : UINT32_MAX / 2;
    SegmentMapping piece = first;
    piece.offset = first.offset + done;
    piece.length = static_cast<uint32_t>(n);
    if (!first.zeroed) piece.moffset = first.moffset + done;
    emit(piece);
    done += n;
  }
}

// The checks of a write or discard of `length` bytes at `offset` into a layer of `virtual_size`
// bytes: both 512-byte aligned, and inside the disk. INVALID_ARGUMENT starting with `prefix`.
absl::Status CheckWriteRange(absl::string_view prefix, uint64_t offset, uint64_t length,
                             uint64_t virtual_size);

}  // namespace dadi::blockstore
