// The ZFile header and trailer (one 512-byte structure, two roles). A ZFile is
//   header (512) | [dictionary] | compressed blocks | jump table | trailer (512)
// Each block of `block_size` decompressed bytes (the last may be shorter) is stored compressed,
// followed by a CRC32C when `verify` is set; the jump table holds one u32 per block, the block's
// stored length. See docs/formats.md.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace dadi::blockstore {

enum class ZFileAlgorithm : uint8_t { kLz4 = 1, kZstd = 2 };

class ZFileHeader {
 public:
  // Encoded length of a header or trailer.
  static constexpr size_t kEncodedLength = 512;
  // overlaybd's packed C struct length, stored in the `size` field.
  static constexpr uint32_t kStructSize = 96;
  static constexpr uint32_t kMinBlockSize = 4096;
  static constexpr uint32_t kMaxBlockSize = 65536;
  // "ZFile\0\1\0" read as a little-endian u64, then the 16-byte UUID-like second magic.
  static constexpr char kMagic0[8] = {'Z', 'F', 'i', 'l', 'e', 0, 1, 0};
  static constexpr unsigned char kMagic1[16] = {0x74, 0x75, 0x6A, 0x69, 0x2E, 0x79, 0x79, 0x66,
                                                0x40, 0x41, 0x6C, 0x69, 0x62, 0x61, 0x62, 0x61};

  // Flag bits.
  static constexpr uint64_t kFlagIsHeader = 1u << 0;
  static constexpr uint64_t kFlagTypeData = 1u << 1;
  static constexpr uint64_t kFlagSealed = 1u << 2;
  // The header already holds the trailer's final fields (index, sizes): no trailer read needed.
  static constexpr uint64_t kFlagHeaderOverwrite = 1u << 3;
  static constexpr uint64_t kFlagDigest = 1u << 4;
  static constexpr uint64_t kFlagIndexCompressed = 1u << 5;

  uint64_t flags = 0;
  uint64_t index_offset = 0;  // bytes from the start of the ZFile to the jump table
  uint64_t index_size = 0;    // number of u32 jump-table entries (= number of blocks)
  uint64_t original_file_size = 0;
  uint32_t index_crc = 0;  // CRC32C (seed 0) of the jump table
  uint32_t block_size = kMinBlockSize;
  ZFileAlgorithm algorithm = ZFileAlgorithm::kLz4;
  uint8_t level = 0;
  uint8_t use_dict = 0;
  uint32_t dict_size = 0;
  uint8_t verify = 1;

  bool is_header() const { return flags & kFlagIsHeader; }
  bool sealed() const { return flags & kFlagSealed; }
  bool header_overwrite() const { return flags & kFlagHeaderOverwrite; }
  // True when this structure carries the final index fields (a trailer, or an overwritten header).
  bool has_index_info() const { return !is_header() || header_overwrite(); }

  // Appends exactly kEncodedLength bytes; fills the digest when kFlagDigest is set.
  void EncodeTo(std::string* dst) const;

  // Parses and checks kEncodedLength bytes: magics, struct size, digest, algorithm, block size,
  // dictionary. `file` names the ZFile in error messages (DATA_LOSS / UNIMPLEMENTED).
  absl::Status DecodeFrom(absl::string_view input, absl::string_view file);

  // Number of blocks a file of original_file_size bytes has.
  uint64_t BlockCount() const { return (original_file_size + block_size - 1) / block_size; }
};

absl::string_view ZFileAlgorithmName(ZFileAlgorithm a);

}  // namespace dadi::blockstore
