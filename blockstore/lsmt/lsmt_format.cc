#include "blockstore/lsmt/lsmt_format.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "blockstore/file/coding.h"

namespace dadi::blockstore {
namespace {

constexpr size_t kOffSize = 24;
constexpr size_t kOffFlags = 28;
constexpr size_t kOffIndexOffset = 32;
constexpr size_t kOffIndexSize = 40;
constexpr size_t kOffVirtualSize = 48;
constexpr size_t kOffUuid = 56;
constexpr size_t kOffParentUuid = 93;
constexpr size_t kOffVersion = 132;
constexpr size_t kOffSubVersion = 133;
constexpr size_t kOffUserTag = 134;

void PutString(char* dst, size_t field, const std::string& s) {
  std::memcpy(dst, s.data(), std::min(s.size(), field - 1));  // keep the final NUL
}

absl::Status GetString(const char* src, size_t field, absl::string_view file,
                       absl::string_view what, std::string* out) {
  const void* nul = std::memchr(src, 0, field);
  if (nul == nullptr) {
    return absl::DataLossError(absl::StrCat(file, ": LSMT field ", what, " is not NUL-terminated"));
  }
  out->assign(src, static_cast<const char*>(nul) - src);
  return absl::OkStatus();
}

}  // namespace

void LsmtHeader::EncodeTo(std::string* dst) const {
  std::string buf(kEncodedLength, '\0');
  char* p = buf.data();
  std::memcpy(p, kMagic0, 8);
  std::memcpy(p + 8, kMagic1, 16);
  EncodeFixed32(p + kOffSize, kStructSize);
  EncodeFixed32(p + kOffFlags, flags);
  EncodeFixed64(p + kOffIndexOffset, index_offset);
  EncodeFixed64(p + kOffIndexSize, index_size);
  EncodeFixed64(p + kOffVirtualSize, virtual_size);
  PutString(p + kOffUuid, kUuidLength, uuid);
  PutString(p + kOffParentUuid, kUuidLength, parent_uuid);
  p[kOffVersion] = static_cast<char>(version);
  p[kOffSubVersion] = static_cast<char>(sub_version);
  PutString(p + kOffUserTag, kUserTagLength, user_tag);
  dst->append(buf);
}

absl::Status LsmtHeader::DecodeFrom(absl::string_view input, absl::string_view file) {
  if (input.size() < kEncodedLength) {
    return absl::DataLossError(absl::StrCat(file, ": LSMT header/trailer truncated (", input.size(),
                                            " of ", kEncodedLength, " bytes)"));
  }
  const char* p = input.data();
  if (std::memcmp(p, kMagic0, 8) != 0 || std::memcmp(p + 8, kMagic1, 16) != 0) {
    return absl::DataLossError(absl::StrCat(file, ": not an LSMT file (bad magic)"));
  }
  uint32_t size = DecodeFixed32(p + kOffSize);
  if (size != kStructSize) {
    return absl::DataLossError(
        absl::StrCat(file, ": LSMT field size = ", size, ", expected ", kStructSize));
  }
  flags = DecodeFixed32(p + kOffFlags);
  index_offset = DecodeFixed64(p + kOffIndexOffset);
  index_size = DecodeFixed64(p + kOffIndexSize);
  virtual_size = DecodeFixed64(p + kOffVirtualSize);
  version = static_cast<uint8_t>(p[kOffVersion]);
  sub_version = static_cast<uint8_t>(p[kOffSubVersion]);
  if (absl::Status s = GetString(p + kOffUuid, kUuidLength, file, "uuid", &uuid); !s.ok()) return s;
  if (absl::Status s =
          GetString(p + kOffParentUuid, kUuidLength, file, "parent_uuid", &parent_uuid);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = GetString(p + kOffUserTag, kUserTagLength, file, "user_tag", &user_tag);
      !s.ok()) {
    return s;
  }
  if (version != 1) {
    return absl::UnimplementedError(
        absl::StrCat(file, ": LSMT field version = ", version, " is not supported (1)"));
  }
  return absl::OkStatus();
}

void SegmentMapping::EncodeTo(char* dst) const {
  uint64_t a = (offset & kMaxOffset) | (static_cast<uint64_t>(length & kMaxLength) << 50);
  uint64_t b = (moffset & kMaxMoffset) | (static_cast<uint64_t>(zeroed ? 1 : 0) << 55) |
               (static_cast<uint64_t>(tag) << 56);
  EncodeFixed64(dst, a);
  EncodeFixed64(dst + 8, b);
}

SegmentMapping SegmentMapping::DecodeFrom(const char* src) {
  uint64_t a = DecodeFixed64(src);
  uint64_t b = DecodeFixed64(src + 8);
  SegmentMapping m;
  m.offset = a & kMaxOffset;
  m.length = static_cast<uint32_t>(a >> 50);
  m.moffset = b & kMaxMoffset;
  m.zeroed = (b >> 55) & 1;
  m.tag = static_cast<uint8_t>(b >> 56);
  return m;
}

void EncodeMappingSplit(const SegmentMapping& m, std::string* dst) {
  SegmentMapping piece = m;
  piece.tag = 0;
  uint64_t left = m.length;
  while (left > 0) {
    piece.length = static_cast<uint32_t>(std::min<uint64_t>(left, SegmentMapping::kMaxLength));
    char buf[SegmentMapping::kEncodedLength];
    piece.EncodeTo(buf);
    dst->append(buf, sizeof(buf));
    piece.offset += piece.length;
    if (!piece.zeroed) piece.moffset += piece.length;
    left -= piece.length;
  }
}

absl::Status CheckWriteRange(absl::string_view prefix, uint64_t offset, uint64_t length,
                             uint64_t virtual_size) {
  if (offset % kSectorSize != 0 || length % kSectorSize != 0) {
    return absl::InvalidArgumentError(absl::StrCat(prefix, "write at ", offset, " length ", length,
                                                   " is not aligned to 512 bytes"));
  }
  if (offset > virtual_size || length > virtual_size - offset) {
    return absl::InvalidArgumentError(absl::StrCat(prefix, "write at ", offset, " length ", length,
                                                   " is past the virtual size ", virtual_size));
  }
  return absl::OkStatus();
}

}  // namespace dadi::blockstore
