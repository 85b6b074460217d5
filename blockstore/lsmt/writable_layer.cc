#include "blockstore/lsmt/writable_layer.h"
#include "blockstore/file/fd_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace dadi::blockstore {
namespace {

absl::Status Errno(absl::string_view what, absl::string_view path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

// RandomAccessFile over the data file's fd, for reading pieces through ReadPieces.
class FdFile final : public RandomAccessFile {
 public:
  FdFile(int fd, uint64_t size, const std::string& name) : fd_(fd), size_(size), name_(name) {}
  uint64_t Size() const override { return size_; }
  absl::StatusOr<size_t> Pread(uint64_t offset, size_t n, char* buf) const override {
    if (offset >= size_) return 0;
    size_t want = static_cast<size_t>(std::min<uint64_t>(n, size_ - offset));
    if (absl::Status s = PreadFull(fd_, buf, want, offset, name_); !s.ok()) return s;
    return want;
  }
  std::string Name() const override { return name_; }

 private:
  int fd_;
  uint64_t size_;
  const std::string& name_;
};

LsmtHeader MakeHeader(const LayerInfo& info, uint32_t flags) {
  LsmtHeader h;
  h.flags = flags;
  h.virtual_size = info.virtual_size;
  h.uuid = info.uuid;
  h.parent_uuid = info.parent_uuid;
  h.user_tag = info.user_tag;
  return h;
}

}  // namespace

absl::StatusOr<std::unique_ptr<WritableLayer>> WritableLayer::Create(const std::string& data_path,
                                                                     const std::string& index_path,
                                                                     LayerInfo info) {
  if (info.virtual_size % kSectorSize != 0 ||
      info.virtual_size / kSectorSize > SegmentMapping::kMaxOffset) {
    return absl::InvalidArgumentError(
        absl::StrCat("LSMT virtual size ", info.virtual_size, " is not a valid multiple of 512"));
  }
  UniqueFd data(::open(data_path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!data.valid()) return Errno("create", data_path);
  UniqueFd index(::open(index_path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!index.valid()) return Errno("create", index_path);
  std::string h;
  MakeHeader(info, LsmtHeader::kFlagIsHeader | LsmtHeader::kFlagTypeData).EncodeTo(&h);
  if (absl::Status s = PwriteFull(data.get(), h.data(), h.size(), 0, data_path); !s.ok()) return s;
  h.clear();
  MakeHeader(info, LsmtHeader::kFlagIsHeader).EncodeTo(&h);
  if (absl::Status s = PwriteFull(index.get(), h.data(), h.size(), 0, index_path); !s.ok())
    return s;
  std::unique_ptr<WritableLayer> layer(
      new WritableLayer(std::move(data), std::move(index), data_path, std::move(info)));
  absl::MutexLock lock(&layer->mu_);
  layer->data_end_ = LsmtHeader::kEncodedLength;
  return layer;
}

absl::StatusOr<std::unique_ptr<WritableLayer>> WritableLayer::Open(const std::string& data_path,
                                                                   const std::string& index_path) {
  UniqueFd data(::open(data_path.c_str(), O_RDWR | O_CLOEXEC));
  if (!data.valid()) return Errno("open", data_path);
  UniqueFd index(::open(index_path.c_str(), O_RDWR | O_CLOEXEC));
  if (!index.valid()) return Errno("open", index_path);
  struct stat ds, is;
  if (::fstat(data.get(), &ds) != 0) return Errno("fstat", data_path);
  if (::fstat(index.get(), &is) != 0) return Errno("fstat", index_path);
  const uint64_t kHL = LsmtHeader::kEncodedLength;
  uint64_t dsize = static_cast<uint64_t>(ds.st_size), isize = static_cast<uint64_t>(is.st_size);
  if (dsize < kHL || isize < kHL) {
    return absl::DataLossError(absl::StrCat(data_path, ": writable layer files lack headers"));
  }
  std::string buf(kHL, '\0');
  if (absl::Status s = PreadFull(data.get(), buf.data(), kHL, 0, data_path); !s.ok()) return s;
  LsmtHeader dh;
  if (absl::Status s = dh.DecodeFrom(buf, data_path); !s.ok()) return s;
  if (!dh.is_header() || !dh.is_data() || dh.sealed()) {
    return absl::DataLossError(
        absl::StrCat(data_path, ": LSMT flags = ", dh.flags, " are not a writable data header"));
  }
  LayerInfo info{dh.virtual_size, dh.uuid, dh.parent_uuid, dh.user_tag};
  if (info.virtual_size % kSectorSize != 0) {
    return absl::DataLossError(
        absl::StrCat(data_path, ": LSMT field virtual_size = ", info.virtual_size));
  }
  std::unique_ptr<WritableLayer> layer(
      new WritableLayer(std::move(data), std::move(index), data_path, info));
  absl::MutexLock lock(&layer->mu_);
  layer->data_end_ = dsize / kSectorSize * kSectorSize;
  // Replay entries in write order, in chunks so a huge index file needs bounded memory.
  const uint64_t entries = (isize - kHL) / SegmentMapping::kEncodedLength;
  const uint64_t vsectors = info.virtual_size / kSectorSize;
  const uint64_t data_sectors = layer->data_end_ / kSectorSize;
  constexpr uint64_t kChunk = 4096;
  std::string chunk;
  for (uint64_t i = 0; i < entries; i += kChunk) {
    uint64_t n = std::min(kChunk, entries - i);
    chunk.resize(n * SegmentMapping::kEncodedLength);
    if (absl::Status s = PreadFull(layer->index_fd_.get(), chunk.data(), chunk.size(),
                                   kHL + i * SegmentMapping::kEncodedLength, index_path);
        !s.ok()) {
      return s;
    }
    for (uint64_t k = 0; k < n; ++k) {
      SegmentMapping m =
          SegmentMapping::DecodeFrom(chunk.data() + k * SegmentMapping::kEncodedLength);
      if (m.is_padding()) continue;
      m.tag = 0;
      if (m.length == 0 || m.end() > vsectors ||
          (!m.zeroed && (m.moffset < kHL / kSectorSize || m.moffset + m.length > data_sectors))) {
        return absl::DataLossError(absl::StrCat(index_path, ": LSMT index entry ", i + k,
                                                " (offset ", m.offset, ", length ", m.length,
                                                ", moffset ", m.moffset, ") is out of range"));
      }
      layer->map_.Insert(m);
    }
  }
  return layer;
}

absl::Status WritableLayer::CheckRange(uint64_t offset, uint64_t length) const {
  return CheckWriteRange(absl::StrCat(data_path_, ": "), offset, length, info_.virtual_size);
}

void WritableLayer::RecordLocked(const SegmentMapping& m) {
  map_.Insert(m);
  EncodeMappingSplit(m, &pending_index_);
}

absl::Status WritableLayer::FlushIndexLocked() {
  if (pending_index_.empty()) return absl::OkStatus();
  struct stat st;
  if (::fstat(index_fd_.get(), &st) != 0) return Errno("fstat", data_path_);
  uint64_t end = static_cast<uint64_t>(st.st_size);
  end -= (end - LsmtHeader::kEncodedLength) % SegmentMapping::kEncodedLength;
  absl::Status s = PwriteFull(index_fd_.get(), pending_index_.data(), pending_index_.size(), end,
                              "LSMT index file");
  if (s.ok()) pending_index_.clear();
  return s;
}

absl::Status WritableLayer::Write(uint64_t offset, absl::string_view data) {
  if (absl::Status s = CheckRange(offset, data.size()); !s.ok()) return s;
  if (data.empty()) return absl::OkStatus();
  absl::MutexLock lock(&mu_);
  if (absl::Status s = PwriteFull(data_fd_.get(), data.data(), data.size(), data_end_, data_path_);
      !s.ok()) {
    return s;
  }
  SegmentMapping first;
  first.offset = offset / kSectorSize;
  first.moffset = data_end_ / kSectorSize;
  ForEachMappingPiece(first, data.size() / kSectorSize,
                      [&](const SegmentMapping& m) { RecordLocked(m); });
  data_end_ += data.size();
  if (pending_index_.size() >= (1 << 20)) return FlushIndexLocked();
  return absl::OkStatus();
}

absl::Status WritableLayer::Discard(uint64_t offset, uint64_t length) {
  if (absl::Status s = CheckRange(offset, length); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  SegmentMapping first;
  first.offset = offset / kSectorSize;
  first.zeroed = true;
  ForEachMappingPiece(first, length / kSectorSize,
                      [&](const SegmentMapping& m) { RecordLocked(m); });
  return absl::OkStatus();
}

void WritableLayer::Lookup(uint64_t offset_sectors, uint64_t length_sectors,
                           std::vector<SegmentMapping>* out) const {
  absl::ReaderMutexLock lock(&mu_);
  map_.Lookup(offset_sectors, length_sectors, out);
}

absl::StatusOr<size_t> WritableLayer::Pread(uint64_t offset, size_t n, char* buf) const {
  if (offset >= info_.virtual_size || n == 0) return 0;
  size_t want = static_cast<size_t>(std::min<uint64_t>(n, info_.virtual_size - offset));
  uint64_t first = offset / kSectorSize;
  uint64_t last = (offset + want + kSectorSize - 1) / kSectorSize;
  std::vector<SegmentMapping> pieces;
  absl::ReaderMutexLock lock(&mu_);
  map_.Lookup(first, last - first, &pieces);
  FdFile file(data_fd_.get(), data_end_, data_path_);
  std::vector<const RandomAccessFile*> files = {&file};
  if (absl::Status s = ReadPieces(pieces, files, offset, want, buf); !s.ok()) return s;
  return want;
}

absl::Status WritableLayer::Sync() {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = FlushIndexLocked(); !s.ok()) return s;
  if (::fsync(data_fd_.get()) != 0) return Errno("fsync", data_path_);
  if (::fsync(index_fd_.get()) != 0) return Errno("fsync", "LSMT index file");
  return absl::OkStatus();
}

size_t WritableLayer::segment_count() const {
  absl::ReaderMutexLock lock(&mu_);
  return map_.size();
}

absl::Status WritableLayer::Commit(WritableFile* out) const {
  absl::ReaderMutexLock lock(&mu_);
  absl::StatusOr<std::unique_ptr<SealedLayerWriter>> w = SealedLayerWriter::Create(out, info_);
  if (!w.ok()) return w.status();
  std::string buf;
  constexpr uint64_t kMaxChunk = 4 << 20;
  for (const SegmentMapping& m : map_.ToVector()) {
    if (m.zeroed) {
      if (absl::Status s =
              (*w)->AddZeroed(m.offset * kSectorSize, uint64_t{m.length} * kSectorSize);
          !s.ok()) {
        return s;
      }
      continue;
    }
    uint64_t done = 0, total = uint64_t{m.length} * kSectorSize;
    while (done < total) {
      uint64_t n = std::min(kMaxChunk, total - done);
      buf.resize(n);
      if (absl::Status s =
              PreadFull(data_fd_.get(), buf.data(), n, m.moffset * kSectorSize + done, data_path_);
          !s.ok()) {
        return s;
      }
      if (absl::Status s = (*w)->AddData(m.offset * kSectorSize + done, buf); !s.ok()) return s;
      done += n;
    }
  }
  return (*w)->Finish();
}

absl::StatusOr<size_t> WritableStack::Pread(uint64_t offset, size_t n, char* buf) const {
  const uint64_t size = Size();
  if (offset >= size || n == 0) return 0;
  size_t want = static_cast<size_t>(std::min<uint64_t>(n, size - offset));
  // Lower layers first, then the top layer's pieces over them.
  if (lower_ != nullptr) {
    absl::StatusOr<size_t> got = lower_->Pread(offset, want, buf);
    if (!got.ok()) return got.status();
    if (*got < want) std::memset(buf + *got, 0, want - *got);
  } else {
    std::memset(buf, 0, want);
  }
  uint64_t first = offset / kSectorSize;
  uint64_t last = (offset + want + kSectorSize - 1) / kSectorSize;
  std::vector<SegmentMapping> pieces;
  top_->Lookup(first, last - first, &pieces);
  std::string tmp;
  for (const SegmentMapping& p : pieces) {
    uint64_t from = std::max(offset, p.offset * kSectorSize);
    uint64_t to = std::min<uint64_t>(offset + want, p.end() * kSectorSize);
    if (from >= to) continue;
    absl::StatusOr<size_t> got = top_->Pread(from, to - from, buf + (from - offset));
    if (!got.ok()) return got.status();
  }
  return want;
}

absl::Status WritableStack::Write(uint64_t offset, absl::string_view data) {
  if (offset % kSectorSize == 0 && data.size() % kSectorSize == 0) return top_->Write(offset, data);
  uint64_t from = offset / kSectorSize * kSectorSize;
  uint64_t to = (offset + data.size() + kSectorSize - 1) / kSectorSize * kSectorSize;
  if (to > Size()) return absl::InvalidArgumentError("write past the virtual size");
  std::string buf(to - from, '\0');
  absl::StatusOr<size_t> got = Pread(from, buf.size(), buf.data());
  if (!got.ok()) return got.status();
  std::memcpy(buf.data() + (offset - from), data.data(), data.size());
  return top_->Write(from, buf);
}

}  // namespace dadi::blockstore
