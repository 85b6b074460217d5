// Streaming ZFile writer: a WritableFile whose bytes come out compressed, block by block, into
// another WritableFile. Output is byte-identical whatever the number of threads.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "blockstore/file/file.h"
#include "blockstore/zfile/zfile_format.h"

namespace dadi::blockstore {

namespace zfile_internal {
class Compressor;
}

struct ZFileWriterOptions {
  ZFileAlgorithm algorithm = ZFileAlgorithm::kLz4;
  // 0 = the library default (LZ4 fast; ZSTD level 3). LZ4 levels > 0 use LZ4 HC.
  int level = 0;
  uint32_t block_size = 4096;  // power of two in [4096, 65536]
  bool verify = true;          // store a CRC32C after each block
  int threads = 1;             // compression threads
};

class ZFileWriter final : public WritableFile {
 public:
  // Writes the header to `out` (not owned; it must outlive the writer). INVALID_ARGUMENT for bad
  // options.
  static absl::StatusOr<std::unique_ptr<ZFileWriter>> Create(WritableFile* out,
                                                             ZFileWriterOptions options = {});
  ~ZFileWriter() override;

  absl::Status Append(absl::string_view data) override;
  // Decompressed bytes appended so far.
  uint64_t Size() const override { return raw_size_; }
  // Compresses what is buffered in whole blocks and syncs `out`.
  absl::Status Sync() override;
  // Writes the last block, the jump table and the trailer. Does not close `out`.
  absl::Status Close() override;
  std::string Name() const override { return out_->Name(); }

  // After Close: the header with the final fields and the header-overwrite flag, which a copy of
  // the file may carry in place of the original header so readers skip the trailer read.
  const ZFileHeader& final_header() const { return final_header_; }
  const ZFileHeader& trailer() const { return trailer_; }

 private:
  ZFileWriter(WritableFile* out, ZFileWriterOptions options);
  // Compresses and writes the whole blocks in pending_ (and the partial tail when `final`).
  absl::Status FlushBlocks(bool final);

  WritableFile* out_;
  ZFileWriterOptions options_;
  std::vector<std::unique_ptr<zfile_internal::Compressor>> compressors_;
  std::string pending_;
  size_t batch_bytes_;
  // Per-block output slots of one batch and the joined batch, reused across batches.
  std::vector<std::string> outputs_;
  std::string joined_;
  uint64_t raw_size_ = 0;
  std::vector<uint32_t> jump_table_;
  bool closed_ = false;
  ZFileHeader final_header_;
  ZFileHeader trailer_;
};

}  // namespace dadi::blockstore
