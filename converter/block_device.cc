#include "converter/block_device.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "blockstore/file/unique_fd.h"

namespace dadi::converter {
namespace {

using blockstore::UniqueFd;

absl::Status ErrnoStatus(int err, absl::string_view what) {
  return absl::Status(absl::ErrnoToStatusCode(err), absl::StrCat(what, ": ", std::strerror(err)));
}

class FileBlockDevice final : public BlockDevice {
 public:
  FileBlockDevice(std::string path, UniqueFd fd, uint64_t size)
      : path_(std::move(path)), fd_(std::move(fd)), size_(size) {}

  uint64_t Size() const override { return size_; }
  std::string Name() const override { return path_; }

  absl::Status Pread(uint64_t offset, size_t n, char* buf) override {
    if (absl::Status s = CheckRange(offset, n, "read"); !s.ok()) return s;
    while (n > 0) {
      ssize_t r = ::pread(fd_.get(), buf, n, static_cast<off_t>(offset));
      if (r < 0) {
        if (errno == EINTR) continue;
        return ErrnoStatus(errno, absl::StrCat("pread ", path_, " at ", offset));
      }
      if (r == 0) {  // The file shrank under us: the missing tail reads as zeros.
        std::memset(buf, 0, n);
        return absl::OkStatus();
      }
      buf += r;
      offset += static_cast<uint64_t>(r);
      n -= static_cast<size_t>(r);
    }
    return absl::OkStatus();
  }

  absl::Status Pwrite(uint64_t offset, absl::string_view data) override {
    if (absl::Status s = CheckRange(offset, data.size(), "write"); !s.ok()) return s;
    const char* p = data.data();
    size_t n = data.size();
    while (n > 0) {
      ssize_t r = ::pwrite(fd_.get(), p, n, static_cast<off_t>(offset));
      if (r < 0) {
        if (errno == EINTR) continue;
        return ErrnoStatus(errno, absl::StrCat("pwrite ", path_, " at ", offset));
      }
      p += r;
      offset += static_cast<uint64_t>(r);
      n -= static_cast<size_t>(r);
    }
    return absl::OkStatus();
  }

  absl::Status Flush() override {
    if (::fdatasync(fd_.get()) != 0) return ErrnoStatus(errno, absl::StrCat("fdatasync ", path_));
    return absl::OkStatus();
  }

 private:
  absl::Status CheckRange(uint64_t offset, size_t n, absl::string_view op) const {
    if (offset % kSectorSize != 0 || n % kSectorSize != 0 || offset > size_ || n > size_ - offset) {
      return absl::OutOfRangeError(absl::StrCat(op, " of ", n, " bytes at ", offset, " on ", path_,
                                                " (size ", size_,
                                                ") is unaligned or out of range"));
    }
    return absl::OkStatus();
  }

  std::string path_;
  UniqueFd fd_;
  uint64_t size_;
};

class MemoryBlockDevice final : public BlockDevice {
 public:
  static constexpr uint64_t kPage = 4096;
  MemoryBlockDevice(uint64_t size, std::string name) : size_(size), name_(std::move(name)) {}

  uint64_t Size() const override { return size_; }
  std::string Name() const override { return name_; }
  absl::Status Flush() override { return absl::OkStatus(); }

  absl::Status Pread(uint64_t offset, size_t n, char* buf) override {
    if (absl::Status s = CheckRange(offset, n); !s.ok()) return s;
    while (n > 0) {
      uint64_t in_page = offset % kPage;
      size_t len = static_cast<size_t>(std::min<uint64_t>(kPage - in_page, n));
      auto it = pages_.find(offset / kPage);
      if (it == pages_.end()) {
        std::memset(buf, 0, len);
      } else {
        std::memcpy(buf, it->second.get() + in_page, len);
      }
      buf += len;
      offset += len;
      n -= len;
    }
    return absl::OkStatus();
  }

  absl::Status Pwrite(uint64_t offset, absl::string_view data) override {
    if (absl::Status s = CheckRange(offset, data.size()); !s.ok()) return s;
    while (!data.empty()) {
      uint64_t in_page = offset % kPage;
      size_t len = static_cast<size_t>(std::min<uint64_t>(kPage - in_page, data.size()));
      std::unique_ptr<char[]>& page = pages_[offset / kPage];
      if (!page) {
        page.reset(new char[kPage]);
        std::memset(page.get(), 0, kPage);
      }
      std::memcpy(page.get() + in_page, data.data(), len);
      data.remove_prefix(len);
      offset += len;
    }
    return absl::OkStatus();
  }

 private:
  absl::Status CheckRange(uint64_t offset, size_t n) const {
    if (offset % kSectorSize != 0 || n % kSectorSize != 0 || offset > size_ || n > size_ - offset) {
      return absl::OutOfRangeError(absl::StrCat("I/O of ", n, " bytes at ", offset, " on ", name_,
                                                " (size ", size_,
                                                ") is unaligned or out of range"));
    }
    return absl::OkStatus();
  }

  uint64_t size_;
  std::string name_;
  absl::flat_hash_map<uint64_t, std::unique_ptr<char[]>> pages_;
};

}  // namespace

std::unique_ptr<BlockDevice> NewMemoryBlockDevice(uint64_t size, std::string name) {
  return std::make_unique<MemoryBlockDevice>(size, std::move(name));
}

absl::StatusOr<std::unique_ptr<BlockDevice>> OpenFileBlockDevice(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus(errno, absl::StrCat("open ", path));
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, absl::StrCat("fstat ", path));
  uint64_t size =
      static_cast<uint64_t>(st.st_size) / BlockDevice::kSectorSize * BlockDevice::kSectorSize;
  return std::make_unique<FileBlockDevice>(path, std::move(fd), size);
}

absl::StatusOr<std::unique_ptr<BlockDevice>> CreateFileBlockDevice(const std::string& path,
                                                                   uint64_t size) {
  if (size % BlockDevice::kSectorSize != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("device size ", size, " of ", path, " is not a multiple of 512"));
  }
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd.valid()) return ErrnoStatus(errno, absl::StrCat("create ", path));
  if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
    return ErrnoStatus(errno, absl::StrCat("ftruncate ", path, " to ", size));
  }
  return std::make_unique<FileBlockDevice>(path, std::move(fd), size);
}

}  // namespace dadi::converter
