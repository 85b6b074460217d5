#include "blockstore/file/file_views.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace dadi::blockstore {
namespace {

class SliceFile final : public RandomAccessFile {
 public:
  SliceFile(std::shared_ptr<const RandomAccessFile> base, uint64_t offset, uint64_t size)
      : base_(std::move(base)), offset_(offset), size_(size) {}
  uint64_t Size() const override { return size_; }
  absl::StatusOr<size_t> Pread(uint64_t offset, size_t n, char* buf) const override {
    if (offset >= size_) return 0;
    size_t want = static_cast<size_t>(std::min<uint64_t>(n, size_ - offset));
    return base_->Pread(offset_ + offset, want, buf);
  }
  std::string Name() const override {
    return absl::StrCat(base_->Name(), "[", offset_, "+", size_, "]");
  }
  absl::Status Invalidate(uint64_t offset, uint64_t n) const override {
    if (offset >= size_) return absl::OkStatus();  // nothing of the window to drop
    return base_->Invalidate(offset_ + offset, std::min<uint64_t>(n, size_ - offset));
  }
  void Locate(uint64_t offset, uint64_t n, std::vector<FileExtent>* out) const override {
    if (offset >= size_) return;
    base_->Locate(offset_ + offset, std::min<uint64_t>(n, size_ - offset), out);
  }

 private:
  std::shared_ptr<const RandomAccessFile> base_;
  uint64_t offset_;
  uint64_t size_;
};

}  // namespace

absl::StatusOr<std::shared_ptr<RandomAccessFile>> NewSliceFile(
    std::shared_ptr<const RandomAccessFile> base, uint64_t offset, uint64_t size) {
  uint64_t total = base->Size();
  if (offset > total || size > total - offset) {
    return absl::OutOfRangeError(absl::StrCat(base->Name(), ": window at offset ", offset,
                                              " length ", size, " is past the end (file size ",
                                              total, ")"));
  }
  return std::make_shared<SliceFile>(std::move(base), offset, size);
}

absl::StatusOr<size_t> CountingFile::Pread(uint64_t offset, size_t n, char* buf) const {
  absl::StatusOr<size_t> got = base_->Pread(offset, n, buf);
  reads_.fetch_add(1, std::memory_order_relaxed);
  if (got.ok()) bytes_.fetch_add(*got, std::memory_order_relaxed);
  return got;
}

absl::Status PrefetchedFile::Preload(uint64_t offset, size_t n) {
  uint64_t size = base_->Size();
  if (offset >= size) return absl::OkStatus();
  n = static_cast<size_t>(std::min<uint64_t>(n, size - offset));
  {
    absl::MutexLock lock(&mu_);
    for (const Range& r : ranges_) {
      if (offset >= r.offset && offset + n <= r.offset + r.data.size()) return absl::OkStatus();
    }
  }
  Range range{offset, std::string(n, '\0')};
  absl::Status s = PreadExact(*base_, offset, n, range.data.data(), "prefetched range");
  if (!s.ok()) return s;
  absl::MutexLock lock(&mu_);
  ranges_.push_back(std::move(range));
  return absl::OkStatus();
}

absl::StatusOr<size_t> PrefetchedFile::Pread(uint64_t offset, size_t n, char* buf) const {
  uint64_t size = base_->Size();
  if (offset >= size) return 0;
  size_t want = static_cast<size_t>(std::min<uint64_t>(n, size - offset));
  {
    absl::ReaderMutexLock lock(&mu_);
    for (const Range& r : ranges_) {
      if (offset >= r.offset && offset + want <= r.offset + r.data.size()) {
        std::memcpy(buf, r.data.data() + (offset - r.offset), want);
        return want;
      }
    }
  }
  return base_->Pread(offset, want, buf);
}

absl::Status PrefetchedFile::Invalidate(uint64_t offset, uint64_t n) const {
  {
    absl::MutexLock lock(&mu_);
    std::erase_if(ranges_, [&](const Range& r) {
      return offset < r.offset + r.data.size() && r.offset < offset + n;
    });
  }
  return base_->Invalidate(offset, n);
}

}  // namespace dadi::blockstore
