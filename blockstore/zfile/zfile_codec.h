// Block compression for ZFile: LZ4 block format (no frame) and ZSTD single-shot frames.
// Internal to blockstore/zfile.
#pragma once

#include <cstddef>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "blockstore/zfile/zfile_format.h"

namespace dadi::blockstore::zfile_internal {

// Largest compressed size of `n` input bytes.
size_t CompressBound(ZFileAlgorithm algorithm, size_t n);

// Compression state for one thread (ZSTD contexts are reusable and costly to create).
class Compressor {
 public:
  Compressor(ZFileAlgorithm algorithm, int level);
  ~Compressor();
  Compressor(const Compressor&) = delete;
  Compressor& operator=(const Compressor&) = delete;
  // Compresses src[0, n) into dst (capacity CompressBound(n)); returns the compressed length.
  absl::StatusOr<size_t> Compress(const char* src, size_t n, char* dst, size_t capacity);

 private:
  ZFileAlgorithm algorithm_;
  int level_;
  void* zstd_ = nullptr;  // ZSTD_CCtx*
  std::unique_ptr<char[]> lz4hc_state_;
};

// Decompresses exactly `expected` bytes into dst or fails with DATA_LOSS. `zstd_dctx` is a
// ZSTD_DCtx* for ZSTD (owned by the caller, used by one thread at a time).
absl::Status Decompress(ZFileAlgorithm algorithm, const char* src, size_t n, char* dst,
                        size_t expected, void* zstd_dctx);

void* NewZstdDctx();
void FreeZstdDctx(void* dctx);

}  // namespace dadi::blockstore::zfile_internal
