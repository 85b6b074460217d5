#include "blockstore/zfile/zfile_writer.h"

#include <algorithm>
#include <thread>

#include "absl/strings/str_cat.h"
#include "blockstore/file/coding.h"
#include "blockstore/zfile/crc32c.h"
#include "blockstore/zfile/zfile_codec.h"

namespace dadi::blockstore {
namespace {

constexpr size_t kBlocksPerThreadBatch = 64;

ZFileHeader BaseHeader(const ZFileWriterOptions& o) {
  ZFileHeader h;
  h.block_size = o.block_size;
  h.algorithm = o.algorithm;
  h.level = static_cast<uint8_t>(o.level);
  h.verify = o.verify ? 1 : 0;
  return h;
}

}  // namespace

ZFileWriter::ZFileWriter(WritableFile* out, ZFileWriterOptions options)
    : out_(out), options_(options) {
  for (int i = 0; i < options_.threads; ++i) {
    compressors_.push_back(
        std::make_unique<zfile_internal::Compressor>(options_.algorithm, options_.level));
  }
  batch_bytes_ = static_cast<size_t>(options_.block_size) * kBlocksPerThreadBatch *
                 static_cast<size_t>(options_.threads);
}

ZFileWriter::~ZFileWriter() = default;

absl::StatusOr<std::unique_ptr<ZFileWriter>> ZFileWriter::Create(WritableFile* out,
                                                                 ZFileWriterOptions options) {
  uint32_t bs = options.block_size;
  if (bs < ZFileHeader::kMinBlockSize || bs > ZFileHeader::kMaxBlockSize || (bs & (bs - 1))) {
    return absl::InvalidArgumentError(
        absl::StrCat("ZFile block size ", bs, " is not a power of two in [4096, 65536]"));
  }
  if (options.algorithm != ZFileAlgorithm::kLz4 && options.algorithm != ZFileAlgorithm::kZstd) {
    return absl::InvalidArgumentError("unknown ZFile algorithm");
  }
  int max_level = options.algorithm == ZFileAlgorithm::kZstd ? 22 : 12;
  if (options.level < 0 || options.level > max_level) {
    return absl::InvalidArgumentError(absl::StrCat("ZFile level ", options.level, " for ",
                                                   ZFileAlgorithmName(options.algorithm),
                                                   " is outside [0, ", max_level, "]"));
  }
  options.threads = std::clamp(options.threads, 1, 64);
  std::unique_ptr<ZFileWriter> w(new ZFileWriter(out, options));
  ZFileHeader h = BaseHeader(options);
  h.flags = ZFileHeader::kFlagIsHeader | ZFileHeader::kFlagTypeData | ZFileHeader::kFlagDigest;
  std::string buf;
  h.EncodeTo(&buf);
  if (absl::Status s = out->Append(buf); !s.ok()) return s;
  return w;
}

absl::Status ZFileWriter::Append(absl::string_view data) {
  if (closed_) return absl::FailedPreconditionError(absl::StrCat(Name(), ": ZFile writer closed"));
  raw_size_ += data.size();
  while (!data.empty()) {
    size_t take = std::min(data.size(), batch_bytes_ - pending_.size());
    pending_.append(data.data(), take);
    data.remove_prefix(take);
    if (pending_.size() == batch_bytes_) {
      if (absl::Status s = FlushBlocks(false); !s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

absl::Status ZFileWriter::FlushBlocks(bool final) {
  const size_t bs = options_.block_size;
  size_t nblocks = final ? (pending_.size() + bs - 1) / bs : pending_.size() / bs;
  if (nblocks == 0) return absl::OkStatus();
  const size_t crc_len = options_.verify ? 4 : 0;
  const size_t cap = zfile_internal::CompressBound(options_.algorithm, bs) + crc_len;
  if (outputs_.size() < nblocks) outputs_.resize(nblocks);
  std::vector<std::string>& outputs = outputs_;
  std::vector<absl::Status> errors(compressors_.size());
  // Each block is compressed on its own, so the output does not depend on which thread did it.
  auto work = [&](size_t t) {
    for (size_t b = t; b < nblocks; b += compressors_.size()) {
      size_t len = std::min(bs, pending_.size() - b * bs);
      std::string& o = outputs[b];
      if (o.size() < cap) o.resize(cap);
      absl::StatusOr<size_t> n =
          compressors_[t]->Compress(pending_.data() + b * bs, len, o.data(), cap - crc_len);
      if (!n.ok()) {
        errors[t] = n.status();
        return;
      }
      if (crc_len) EncodeFixed32(o.data() + *n, crc32c::Extend(crc32c::kBlockSeed, o.data(), *n));
      o.resize(*n + crc_len);
    }
  };
  size_t threads = std::min(compressors_.size(), nblocks);
  if (threads <= 1) {
    work(0);
  } else {
    std::vector<std::thread> pool;
    for (size_t t = 1; t < compressors_.size(); ++t) pool.emplace_back(work, t);
    work(0);
    for (std::thread& th : pool) th.join();
  }
  for (const absl::Status& e : errors) {
    if (!e.ok()) return absl::InternalError(absl::StrCat(Name(), ": ", e.message()));
  }
  joined_.clear();
  for (size_t b = 0; b < nblocks; ++b) {
    jump_table_.push_back(static_cast<uint32_t>(outputs[b].size()));
    joined_ += outputs[b];
  }
  if (absl::Status s = out_->Append(joined_); !s.ok()) return s;
  pending_.erase(0, std::min(pending_.size(), nblocks * bs));
  return absl::OkStatus();
}

absl::Status ZFileWriter::Sync() {
  if (closed_) return absl::FailedPreconditionError(absl::StrCat(Name(), ": ZFile writer closed"));
  if (absl::Status s = FlushBlocks(false); !s.ok()) return s;
  return out_->Sync();
}

absl::Status ZFileWriter::Close() {
  if (closed_) return absl::FailedPreconditionError(absl::StrCat(Name(), ": ZFile writer closed"));
  closed_ = true;
  if (absl::Status s = FlushBlocks(true); !s.ok()) return s;
  std::string table(4 * jump_table_.size(), '\0');
  for (size_t i = 0; i < jump_table_.size(); ++i)
    EncodeFixed32(table.data() + 4 * i, jump_table_[i]);
  uint64_t index_offset = out_->Size();
  trailer_ = BaseHeader(options_);
  trailer_.flags = ZFileHeader::kFlagTypeData | ZFileHeader::kFlagSealed | ZFileHeader::kFlagDigest;
  trailer_.index_offset = index_offset;
  trailer_.index_size = jump_table_.size();
  trailer_.original_file_size = raw_size_;
  trailer_.index_crc = crc32c::Value(table.data(), table.size());
  final_header_ = trailer_;
  final_header_.flags = ZFileHeader::kFlagIsHeader | ZFileHeader::kFlagTypeData |
                        ZFileHeader::kFlagHeaderOverwrite | ZFileHeader::kFlagDigest;
  trailer_.EncodeTo(&table);
  return out_->Append(table);
}

}  // namespace dadi::blockstore
