// Random-access reader of a ZFile: presents the decompressed content as a RandomAccessFile.
// Thread-safe: any number of threads may Pread concurrently; decompressed blocks go to a
// BlockCache that may be shared by many readers.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "blockstore/file/file.h"
#include "blockstore/zfile/block_cache.h"
#include "blockstore/zfile/zfile_format.h"

namespace dadi::blockstore {

struct ZFileReaderOptions {
  // Cache for decompressed blocks; when null the reader makes a private one of cache_bytes.
  std::shared_ptr<BlockCache> cache;
  size_t cache_bytes = 8 << 20;
  // Check each block's stored CRC32C (when the file has them) before decompressing it.
  bool verify_block_crc = true;
  // A read spanning many uncached blocks fetches their compressed bytes with one Pread of at most
  // this many bytes (more Preads for longer spans).
  size_t max_batch_bytes = 4 << 20;
};

class ZFileReader final : public RandomAccessFile {
 public:
  // Reads and checks the header, trailer (skipped when the header carries its fields) and jump
  // table. Errors: DATA_LOSS (corrupt or truncated), UNIMPLEMENTED (unsupported feature), or
  // the file's own I/O error.
  static absl::StatusOr<std::unique_ptr<ZFileReader>> Open(
      std::shared_ptr<const RandomAccessFile> file, ZFileReaderOptions options = {});
  ~ZFileReader() override;

  // The decompressed size.
  uint64_t Size() const override { return info_.original_file_size; }
  // Reads decompressed bytes. A block that fails its CRC or does not decompress may be a bad
  // cached copy: its stored bytes are invalidated in the file (RandomAccessFile::Invalidate) and
  // read once more; wrong bytes are never returned. Errors: DATA_LOSS naming the file, block and
  // offset when the block is still bad (or the file cannot refetch it); the file's errors.
  absl::StatusOr<size_t> Pread(uint64_t offset, size_t n, char* buf) const override;
  std::string Name() const override { return file_->Name(); }
  // The stored bytes of the blocks holding the range, in the compressed file.
  void Locate(uint64_t offset, uint64_t n, std::vector<FileExtent>* out) const override;
  // Decompresses the blocks holding the range that are not cached into the block cache
  // (Pread streams a read of several blocks past it).
  absl::Status WarmCache(uint64_t offset, uint64_t n) const override;

  // The header as stored, and the structure holding the final fields (trailer or overwritten
  // header).
  const ZFileHeader& header() const { return header_; }
  const ZFileHeader& info() const { return info_; }
  uint64_t block_count() const { return info_.index_size; }
  // Bytes of the whole compressed file.
  uint64_t compressed_size() const { return file_->Size(); }
  // Stored length of block i (including its CRC when present).
  uint32_t stored_block_length(uint64_t i) const {
    return static_cast<uint32_t>(offsets_[i + 1] - offsets_[i]);
  }

  // Reads, checks and decompresses every block (bypassing the cache), refetching bad blocks
  // once like Pread.
  absl::Status VerifyAll() const;

  // Blocks that failed verification and were reread from the file's origin.
  uint64_t refetched_blocks() const { return refetched_.load(std::memory_order_relaxed); }

 private:
  ZFileReader(std::shared_ptr<const RandomAccessFile> file, ZFileReaderOptions options);
  size_t BlockLength(uint64_t i) const;
  // The end (exclusive) of the run of blocks from i (not cached) up to `last` that are not
  // cached and stored within max_batch_bytes: read together with one Pread.
  uint64_t UncachedRunEnd(uint64_t i, uint64_t last) const;
  // Reads the stored bytes of blocks [i, j) into `stored` with one Pread.
  absl::Status ReadStored(uint64_t i, uint64_t j, std::string* stored) const;
  // Checks and decompresses block i from its stored bytes into dst (BlockLength(i) bytes).
  absl::Status DecodeInto(uint64_t i, const char* stored, char* dst) const;
  // DecodeInto; on DATA_LOSS invalidates the block's stored bytes in the file and decodes a
  // fresh read of them once.
  absl::Status DecodeOrRefetch(uint64_t i, const char* stored, char* dst) const;
  // The same into fresh cache memory.
  absl::StatusOr<BlockCache::Value> DecodeBlock(uint64_t i, const char* stored) const;
  void* AcquireDctx() const;
  void ReleaseDctx(void* dctx) const;

  std::shared_ptr<const RandomAccessFile> file_;
  ZFileReaderOptions options_;
  std::shared_ptr<BlockCache> cache_;
  uint64_t cache_id_ = 0;
  ZFileHeader header_;
  ZFileHeader info_;
  std::vector<uint64_t> offsets_;  // block i is stored at [offsets_[i], offsets_[i+1])
  mutable std::atomic<uint64_t> refetched_{0};
  mutable absl::Mutex dctx_mu_;
  mutable std::vector<void*> dctx_pool_ ABSL_GUARDED_BY(dctx_mu_);
};

}  // namespace dadi::blockstore
