#include "converter/block_device.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

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

}  // namespace

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
