#include "blockstore/zfile/zfile_codec.h"

#include <lz4.h>
#include <lz4hc.h>
#include <zstd.h>

#include "absl/strings/str_cat.h"

namespace dadi::blockstore::zfile_internal {

size_t CompressBound(ZFileAlgorithm algorithm, size_t n) {
  if (algorithm == ZFileAlgorithm::kZstd) return ZSTD_compressBound(n);
  return static_cast<size_t>(LZ4_compressBound(static_cast<int>(n)));
}

Compressor::Compressor(ZFileAlgorithm algorithm, int level) : algorithm_(algorithm), level_(level) {
  if (algorithm_ == ZFileAlgorithm::kZstd) {
    zstd_ = ZSTD_createCCtx();
  } else if (level_ > 0) {
    lz4hc_state_.reset(new char[LZ4_sizeofStateHC()]);
  }
}

Compressor::~Compressor() {
  if (zstd_ != nullptr) ZSTD_freeCCtx(static_cast<ZSTD_CCtx*>(zstd_));
}

absl::StatusOr<size_t> Compressor::Compress(const char* src, size_t n, char* dst, size_t capacity) {
  if (algorithm_ == ZFileAlgorithm::kZstd) {
    size_t r = ZSTD_compressCCtx(static_cast<ZSTD_CCtx*>(zstd_), dst, capacity, src, n, level_);
    if (ZSTD_isError(r)) {
      return absl::InternalError(absl::StrCat("zstd compression failed: ", ZSTD_getErrorName(r)));
    }
    return r;
  }
  int r;
  if (lz4hc_state_ != nullptr) {
    r = LZ4_compress_HC_extStateHC(lz4hc_state_.get(), src, dst, static_cast<int>(n),
                                   static_cast<int>(capacity), level_);
  } else {
    r = LZ4_compress_default(src, dst, static_cast<int>(n), static_cast<int>(capacity));
  }
  if (r <= 0) return absl::InternalError("lz4 compression failed");
  return static_cast<size_t>(r);
}

absl::Status Decompress(ZFileAlgorithm algorithm, const char* src, size_t n, char* dst,
                        size_t expected, void* zstd_dctx) {
  if (algorithm == ZFileAlgorithm::kZstd) {
    size_t r = ZSTD_decompressDCtx(static_cast<ZSTD_DCtx*>(zstd_dctx), dst, expected, src, n);
    if (ZSTD_isError(r)) {
      return absl::DataLossError(absl::StrCat("zstd: ", ZSTD_getErrorName(r)));
    }
    if (r != expected) {
      return absl::DataLossError(
          absl::StrCat("zstd: block decompressed to ", r, " bytes, expected ", expected));
    }
    return absl::OkStatus();
  }
  int r = LZ4_decompress_safe(src, dst, static_cast<int>(n), static_cast<int>(expected));
  if (r < 0) return absl::DataLossError("lz4: malformed block");
  if (static_cast<size_t>(r) != expected) {
    return absl::DataLossError(
        absl::StrCat("lz4: block decompressed to ", r, " bytes, expected ", expected));
  }
  return absl::OkStatus();
}

void* NewZstdDctx() { return ZSTD_createDCtx(); }
void FreeZstdDctx(void* dctx) { ZSTD_freeDCtx(static_cast<ZSTD_DCtx*>(dctx)); }

}  // namespace dadi::blockstore::zfile_internal
