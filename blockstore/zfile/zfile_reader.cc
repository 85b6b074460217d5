#include "blockstore/zfile/zfile_reader.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "blockstore/file/coding.h"
#include "blockstore/zfile/crc32c.h"
#include "blockstore/zfile/zfile_codec.h"

namespace dadi::blockstore {

ZFileReader::ZFileReader(std::shared_ptr<const RandomAccessFile> file, ZFileReaderOptions options)
    : file_(std::move(file)), options_(std::move(options)) {
  cache_ = options_.cache != nullptr ? options_.cache
                                     : std::make_shared<BlockCache>(options_.cache_bytes);
  cache_id_ = cache_->NewId();
}

ZFileReader::~ZFileReader() {
  for (void* d : dctx_pool_) zfile_internal::FreeZstdDctx(d);
}

absl::StatusOr<std::unique_ptr<ZFileReader>> ZFileReader::Open(
    std::shared_ptr<const RandomAccessFile> file, ZFileReaderOptions options) {
  const std::string name = file->Name();
  const uint64_t size = file->Size();
  constexpr uint64_t kHL = ZFileHeader::kEncodedLength;
  if (size < 2 * kHL) {
    return absl::DataLossError(absl::StrCat(name, ": ZFile too short (", size,
                                            " bytes; header and trailer need ", 2 * kHL, ")"));
  }
  std::unique_ptr<ZFileReader> r(new ZFileReader(std::move(file), std::move(options)));
  char buf[kHL];
  if (absl::Status s = PreadExact(*r->file_, 0, kHL, buf, "ZFile header"); !s.ok()) return s;
  if (absl::Status s = r->header_.DecodeFrom(absl::string_view(buf, kHL), name); !s.ok()) return s;
  if (!r->header_.is_header()) {
    return absl::DataLossError(absl::StrCat(name, ": ZFile header lacks flag is_header"));
  }
  if (r->header_.header_overwrite()) {
    r->info_ = r->header_;
  } else {
    if (absl::Status s = PreadExact(*r->file_, size - kHL, kHL, buf, "ZFile trailer"); !s.ok()) {
      return s;
    }
    if (absl::Status s = r->info_.DecodeFrom(absl::string_view(buf, kHL), name); !s.ok()) {
      return s;
    }
    if (r->info_.is_header()) {
      return absl::DataLossError(absl::StrCat(name, ": ZFile trailer has flag is_header set"));
    }
  }
  const ZFileHeader& info = r->info_;
  // The jump table ends where the trailer begins.
  const uint64_t data_start = kHL + info.dict_size;
  if (info.index_size > (size - 2 * kHL) / 4) {
    return absl::DataLossError(absl::StrCat(name, ": ZFile field index_size = ", info.index_size,
                                            " does not fit in a file of ", size, " bytes"));
  }
  if (info.index_offset < data_start || info.index_offset + 4 * info.index_size != size - kHL) {
    return absl::DataLossError(absl::StrCat(name,
                                            ": ZFile field index_offset = ", info.index_offset,
                                            " with index_size = ", info.index_size,
                                            " does not end at the trailer (file size ", size, ")"));
  }
  if (info.index_size != info.BlockCount()) {
    return absl::DataLossError(absl::StrCat(name, ": ZFile field index_size = ", info.index_size,
                                            " but original_file_size = ", info.original_file_size,
                                            " needs ", info.BlockCount(), " blocks of ",
                                            info.block_size));
  }
  std::string table(4 * info.index_size, '\0');
  if (absl::Status s =
          PreadExact(*r->file_, info.index_offset, table.size(), table.data(), "ZFile jump table");
      !s.ok()) {
    return s;
  }
  uint32_t crc = crc32c::Value(table.data(), table.size());
  if (crc != info.index_crc) {
    return absl::DataLossError(
        absl::StrFormat("%s: ZFile jump table CRC mismatch (field index_crc %08x, computed %08x)",
                        name, info.index_crc, crc));
  }
  const uint64_t min_len = info.verify ? 5 : 1;
  const uint64_t max_len =
      zfile_internal::CompressBound(info.algorithm, info.block_size) + (info.verify ? 4 : 0);
  r->offsets_.resize(info.index_size + 1);
  uint64_t pos = data_start;
  for (uint64_t i = 0; i < info.index_size; ++i) {
    r->offsets_[i] = pos;
    uint32_t len = DecodeFixed32(table.data() + 4 * i);
    if (len < min_len || len > max_len) {
      return absl::DataLossError(absl::StrCat(name, ": ZFile jump table entry ", i, " = ", len,
                                              " is outside [", min_len, ", ", max_len, "]"));
    }
    pos += len;
    if (pos > info.index_offset) {
      return absl::DataLossError(absl::StrCat(name, ": ZFile block ", i,
                                              " runs past the jump table at ", info.index_offset));
    }
  }
  if (pos != info.index_offset) {
    return absl::DataLossError(absl::StrCat(name, ": ZFile blocks end at ", pos,
                                            " but the jump table starts at ", info.index_offset));
  }
  r->offsets_[info.index_size] = pos;
  return r;
}

size_t ZFileReader::BlockLength(uint64_t i) const {
  uint64_t start = i * info_.block_size;
  return static_cast<size_t>(
      std::min<uint64_t>(info_.block_size, info_.original_file_size - start));
}

uint64_t ZFileReader::UncachedRunEnd(uint64_t i, uint64_t last) const {
  uint64_t j = i + 1;
  while (j <= last && offsets_[j + 1] - offsets_[i] <= options_.max_batch_bytes &&
         cache_->Lookup(cache_id_, j) == nullptr) {
    ++j;
  }
  return j;
}

absl::Status ZFileReader::ReadStored(uint64_t i, uint64_t j, std::string* stored) const {
  stored->resize(offsets_[j] - offsets_[i]);
  return PreadExact(*file_, offsets_[i], stored->size(), stored->data(), "ZFile compressed blocks");
}

void* ZFileReader::AcquireDctx() const {
  {
    absl::MutexLock lock(&dctx_mu_);
    if (!dctx_pool_.empty()) {
      void* d = dctx_pool_.back();
      dctx_pool_.pop_back();
      return d;
    }
  }
  return zfile_internal::NewZstdDctx();
}

void ZFileReader::ReleaseDctx(void* dctx) const {
  absl::MutexLock lock(&dctx_mu_);
  dctx_pool_.push_back(dctx);
}

absl::Status ZFileReader::DecodeInto(uint64_t i, const char* stored, char* dst) const {
  size_t stored_len = stored_block_length(i);
  size_t payload = stored_len;
  if (info_.verify) {
    payload -= 4;
    if (options_.verify_block_crc) {
      uint32_t want = DecodeFixed32(stored + payload);
      uint32_t got = crc32c::Extend(crc32c::kBlockSeed, stored, payload);
      if (want != got) {
        return absl::DataLossError(absl::StrFormat(
            "%s: ZFile block %d (at offset %d) CRC mismatch (stored %08x, computed %08x)",
            file_->Name(), i, offsets_[i], want, got));
      }
    }
  }
  void* dctx = info_.algorithm == ZFileAlgorithm::kZstd ? AcquireDctx() : nullptr;
  absl::Status s =
      zfile_internal::Decompress(info_.algorithm, stored, payload, dst, BlockLength(i), dctx);
  if (dctx != nullptr) ReleaseDctx(dctx);
  if (!s.ok()) {
    return absl::DataLossError(absl::StrCat(file_->Name(), ": ZFile block ", i, " (at offset ",
                                            offsets_[i], "): ", s.message()));
  }
  return absl::OkStatus();
}

absl::Status ZFileReader::DecodeOrRefetch(uint64_t i, const char* stored, char* dst) const {
  absl::Status s = DecodeInto(i, stored, dst);
  if (s.code() != absl::StatusCode::kDataLoss) return s;
  const size_t len = stored_block_length(i);
  if (absl::Status inv = file_->Invalidate(offsets_[i], len); !inv.ok()) {
    if (inv.code() == absl::StatusCode::kUnimplemented) return s;  // rereading gives the same
    return absl::DataLossError(absl::StrCat(s.message(), "; cannot refetch: ", inv.message()));
  }
  refetched_.fetch_add(1, std::memory_order_relaxed);
  std::string fresh;
  if (absl::Status r = ReadStored(i, i + 1, &fresh); !r.ok()) return r;
  s = DecodeInto(i, fresh.data(), dst);
  if (s.code() != absl::StatusCode::kDataLoss) return s;
  return absl::DataLossError(absl::StrCat(s.message(), " (again after refetching it)"));
}

absl::StatusOr<BlockCache::Value> ZFileReader::DecodeBlock(uint64_t i, const char* stored) const {
  std::shared_ptr<CachedBlock> out = cache_->Allocate(BlockLength(i));
  if (absl::Status s = DecodeOrRefetch(i, stored, out->mutable_data()); !s.ok()) return s;
  return BlockCache::Value(std::move(out));
}

absl::StatusOr<size_t> ZFileReader::Pread(uint64_t offset, size_t n, char* buf) const {
  const uint64_t size = info_.original_file_size;
  if (offset >= size || n == 0) return 0;
  const size_t want = static_cast<size_t>(std::min<uint64_t>(n, size - offset));
  const uint64_t bs = info_.block_size;
  const uint64_t first = offset / bs;
  const uint64_t last = (offset + want - 1) / bs;
  auto copy_out = [&](uint64_t i, const CachedBlock& block) {
    uint64_t block_start = i * bs;
    uint64_t from = std::max(offset, block_start);
    uint64_t to = std::min<uint64_t>(offset + want, block_start + block.size());
    std::memcpy(buf + (from - offset), block.data() + (from - block_start), to - from);
  };
  std::string stored;
  uint64_t i = first;
  while (i <= last) {
    {
      uint64_t block_start = i * bs;
      uint64_t from = std::max(offset, block_start);
      uint64_t to = std::min<uint64_t>(offset + want, block_start + bs);
      if (cache_->CopyOut(cache_id_, i, from - block_start, to - from, buf + (from - offset))) {
        ++i;
        continue;
      }
    }
    // A run of uncached blocks, fetched with one read.
    const uint64_t j = UncachedRunEnd(i, last);
    if (absl::Status s = ReadStored(i, j, &stored); !s.ok()) return s;
    for (uint64_t k = i; k < j; ++k) {
      const char* src = stored.data() + (offsets_[k] - offsets_[i]);
      // A read spanning several blocks is streaming: blocks it covers whole are decompressed
      // straight into the caller's buffer and not cached (the reader above caches pages).
      const uint64_t block_start = k * bs;
      if (last > first && block_start >= offset && block_start + BlockLength(k) <= offset + want) {
        if (absl::Status s = DecodeOrRefetch(k, src, buf + (block_start - offset)); !s.ok()) {
          return s;
        }
        continue;
      }
      absl::StatusOr<BlockCache::Value> v = DecodeBlock(k, src);
      if (!v.ok()) return v.status();
      copy_out(k, **v);
      cache_->Insert(cache_id_, k, *std::move(v));
    }
    i = j;
  }
  return want;
}

void ZFileReader::Locate(uint64_t offset, uint64_t n, std::vector<FileExtent>* out) const {
  const uint64_t size = info_.original_file_size;
  if (offset >= size || n == 0) return;
  const uint64_t end = offset + std::min<uint64_t>(n, size - offset);
  const uint64_t first = offset / info_.block_size;
  const uint64_t last = (end - 1) / info_.block_size;
  file_->Locate(offsets_[first], offsets_[last + 1] - offsets_[first], out);
}

absl::Status ZFileReader::WarmCache(uint64_t offset, uint64_t n) const {
  const uint64_t size = info_.original_file_size;
  if (offset >= size || n == 0) return absl::OkStatus();
  const uint64_t first = offset / info_.block_size;
  const uint64_t last = (offset + std::min<uint64_t>(n, size - offset) - 1) / info_.block_size;
  std::string stored;
  for (uint64_t i = first; i <= last;) {
    if (cache_->Lookup(cache_id_, i) != nullptr) {
      ++i;
      continue;
    }
    const uint64_t j = UncachedRunEnd(i, last);
    if (absl::Status s = ReadStored(i, j, &stored); !s.ok()) return s;
    for (uint64_t k = i; k < j; ++k) {
      absl::StatusOr<BlockCache::Value> v =
          DecodeBlock(k, stored.data() + (offsets_[k] - offsets_[i]));
      if (!v.ok()) return v.status();
      cache_->Insert(cache_id_, k, *std::move(v));
    }
    i = j;
  }
  return absl::OkStatus();
}

absl::Status ZFileReader::VerifyAll() const {
  std::string stored;
  std::string scratch(info_.block_size, '\0');
  uint64_t i = 0;
  while (i < info_.index_size) {
    uint64_t j = i + 1;
    while (j < info_.index_size && offsets_[j + 1] - offsets_[i] <= options_.max_batch_bytes) ++j;
    if (absl::Status s = ReadStored(i, j, &stored); !s.ok()) return s;
    for (uint64_t k = i; k < j; ++k) {
      if (absl::Status s =
              DecodeOrRefetch(k, stored.data() + (offsets_[k] - offsets_[i]), scratch.data());
          !s.ok()) {
        return s;
      }
    }
    i = j;
  }
  return absl::OkStatus();
}

}  // namespace dadi::blockstore
