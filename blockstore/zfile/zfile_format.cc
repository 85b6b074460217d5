#include "blockstore/zfile/zfile_format.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "blockstore/file/coding.h"
#include "blockstore/zfile/crc32c.h"

namespace dadi::blockstore {
namespace {

// Field offsets inside the 512-byte structure (overlaybd's packed layout).
constexpr size_t kOffSize = 24;
constexpr size_t kOffDigest = 28;
constexpr size_t kOffFlags = 32;
constexpr size_t kOffIndexOffset = 40;
constexpr size_t kOffIndexSize = 48;
constexpr size_t kOffOriginalSize = 56;
constexpr size_t kOffIndexCrc = 64;
constexpr size_t kOffBlockSize = 72;
constexpr size_t kOffAlgo = 76;
constexpr size_t kOffLevel = 77;
constexpr size_t kOffUseDict = 78;
constexpr size_t kOffDictSize = 84;
constexpr size_t kOffVerify = 88;

}  // namespace

absl::string_view ZFileAlgorithmName(ZFileAlgorithm a) {
  switch (a) {
    case ZFileAlgorithm::kLz4:
      return "lz4";
    case ZFileAlgorithm::kZstd:
      return "zstd";
  }
  return "unknown";
}

void ZFileHeader::EncodeTo(std::string* dst) const {
  char buf[kEncodedLength] = {};
  std::memcpy(buf, kMagic0, 8);
  std::memcpy(buf + 8, kMagic1, 16);
  EncodeFixed32(buf + kOffSize, kStructSize);
  EncodeFixed64(buf + kOffFlags, flags);
  EncodeFixed64(buf + kOffIndexOffset, index_offset);
  EncodeFixed64(buf + kOffIndexSize, index_size);
  EncodeFixed64(buf + kOffOriginalSize, original_file_size);
  EncodeFixed32(buf + kOffIndexCrc, index_crc);
  EncodeFixed32(buf + kOffBlockSize, block_size);
  buf[kOffAlgo] = static_cast<char>(algorithm);
  buf[kOffLevel] = static_cast<char>(level);
  buf[kOffUseDict] = static_cast<char>(use_dict);
  EncodeFixed32(buf + kOffDictSize, dict_size);
  buf[kOffVerify] = static_cast<char>(verify);
  if (flags & kFlagDigest) EncodeFixed32(buf + kOffDigest, crc32c::Value(buf, kEncodedLength));
  dst->append(buf, kEncodedLength);
}

absl::Status ZFileHeader::DecodeFrom(absl::string_view input, absl::string_view file) {
  if (input.size() < kEncodedLength) {
    return absl::DataLossError(absl::StrCat(file, ": ZFile header/trailer truncated (",
                                            input.size(), " of ", kEncodedLength, " bytes)"));
  }
  const char* p = input.data();
  if (std::memcmp(p, kMagic0, 8) != 0 || std::memcmp(p + 8, kMagic1, 16) != 0) {
    return absl::DataLossError(absl::StrCat(file, ": not a ZFile (bad magic)"));
  }
  uint32_t size = DecodeFixed32(p + kOffSize);
  if (size != kStructSize) {
    return absl::DataLossError(
        absl::StrCat(file, ": ZFile field size is ", size, ", expected ", kStructSize));
  }
  flags = DecodeFixed64(p + kOffFlags);
  if (flags & kFlagDigest) {
    char copy[kEncodedLength];
    std::memcpy(copy, p, kEncodedLength);
    std::memset(copy + kOffDigest, 0, 4);
    uint32_t want = DecodeFixed32(p + kOffDigest);
    uint32_t got = crc32c::Value(copy, kEncodedLength);
    if (want != got) {
      return absl::DataLossError(
          absl::StrFormat("%s: ZFile %s digest mismatch (stored %08x, computed %08x)", file,
                          (flags & kFlagIsHeader) ? "header" : "trailer", want, got));
    }
  }
  index_offset = DecodeFixed64(p + kOffIndexOffset);
  index_size = DecodeFixed64(p + kOffIndexSize);
  original_file_size = DecodeFixed64(p + kOffOriginalSize);
  index_crc = DecodeFixed32(p + kOffIndexCrc);
  block_size = DecodeFixed32(p + kOffBlockSize);
  uint8_t algo = static_cast<uint8_t>(p[kOffAlgo]);
  level = static_cast<uint8_t>(p[kOffLevel]);
  use_dict = static_cast<uint8_t>(p[kOffUseDict]);
  dict_size = DecodeFixed32(p + kOffDictSize);
  verify = static_cast<uint8_t>(p[kOffVerify]);
  if (algo != static_cast<uint8_t>(ZFileAlgorithm::kLz4) &&
      algo != static_cast<uint8_t>(ZFileAlgorithm::kZstd)) {
    return absl::UnimplementedError(
        absl::StrCat(file, ": ZFile field algo = ", algo, " is not supported (1 lz4, 2 zstd)"));
  }
  algorithm = static_cast<ZFileAlgorithm>(algo);
  if (block_size < kMinBlockSize || block_size > kMaxBlockSize ||
      (block_size & (block_size - 1)) != 0) {
    return absl::DataLossError(absl::StrCat(file, ": ZFile field block_size = ", block_size,
                                            " is not a power of two in [4096, 65536]"));
  }
  if (use_dict != 0 || dict_size != 0) {
    return absl::UnimplementedError(
        absl::StrCat(file, ": ZFile uses a dictionary (use_dict = ", use_dict,
                     ", dict_size = ", dict_size, "), which is not supported"));
  }
  if (verify > 1) {
    return absl::DataLossError(absl::StrCat(file, ": ZFile field verify = ", verify));
  }
  if (has_index_info() && (flags & kFlagIndexCompressed)) {
    return absl::UnimplementedError(
        absl::StrCat(file, ": ZFile jump table is compressed (flag bit 5), not supported"));
  }
  return absl::OkStatus();
}

}  // namespace dadi::blockstore
