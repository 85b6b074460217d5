#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "blockstore/file/file.h"
#include "blockstore/file/unique_fd.h"

namespace dadi::blockstore {
namespace {

absl::Status ErrnoStatus(int err, absl::string_view what, absl::string_view path) {
  std::string message = absl::StrCat(what, " ", path, ": ", std::strerror(err));
  switch (err) {
    case ENOENT:
      return absl::NotFoundError(message);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(message);
    case EEXIST:
      return absl::AlreadyExistsError(message);
    default:
      return absl::InternalError(message);
  }
}

class LocalRandomAccessFile final : public RandomAccessFile {
 public:
  LocalRandomAccessFile(UniqueFd fd, uint64_t size, std::string path)
      : fd_(std::move(fd)), size_(size), path_(std::move(path)) {}

  uint64_t Size() const override { return size_; }

  absl::StatusOr<size_t> Pread(uint64_t offset, size_t n, char* buf) const override {
    if (offset >= size_) return 0;
    size_t want = static_cast<size_t>(std::min<uint64_t>(n, size_ - offset));
    size_t done = 0;
    while (done < want) {
      ssize_t r = ::pread(fd_.get(), buf + done, want - done, static_cast<off_t>(offset + done));
      if (r < 0) {
        if (errno == EINTR) continue;
        return ErrnoStatus(errno, "pread", path_);
      }
      if (r == 0) break;  // The file shrank under us; report what we have.
      done += static_cast<size_t>(r);
    }
    return done;
  }

  std::string Name() const override { return path_; }

 private:
  UniqueFd fd_;
  uint64_t size_;
  std::string path_;
};

class LocalWritableFile final : public WritableFile {
 public:
  LocalWritableFile(UniqueFd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}

  absl::Status Append(absl::string_view data) override {
    if (!fd_.valid()) return absl::FailedPreconditionError(absl::StrCat(path_, " is closed"));
    while (!data.empty()) {
      ssize_t w = ::write(fd_.get(), data.data(), data.size());
      if (w < 0) {
        if (errno == EINTR) continue;
        return ErrnoStatus(errno, "write", path_);
      }
      data.remove_prefix(static_cast<size_t>(w));
      size_ += static_cast<uint64_t>(w);
    }
    return absl::OkStatus();
  }

  uint64_t Size() const override { return size_; }

  absl::Status Sync() override {
    if (!fd_.valid()) return absl::FailedPreconditionError(absl::StrCat(path_, " is closed"));
    if (::fsync(fd_.get()) != 0) return ErrnoStatus(errno, "fsync", path_);
    return absl::OkStatus();
  }

  absl::Status Close() override {
    if (!fd_.valid()) return absl::FailedPreconditionError(absl::StrCat(path_, " is closed"));
    int fd = fd_.release();
    if (::close(fd) != 0) return ErrnoStatus(errno, "close", path_);
    return absl::OkStatus();
  }

  std::string Name() const override { return path_; }

 private:
  UniqueFd fd_;
  std::string path_;
  uint64_t size_ = 0;
};

class MemoryFile final : public RandomAccessFile {
 public:
  MemoryFile(std::string data, std::string name) : data_(std::move(data)), name_(std::move(name)) {}
  uint64_t Size() const override { return data_.size(); }
  absl::StatusOr<size_t> Pread(uint64_t offset, size_t n, char* buf) const override {
    if (offset >= data_.size()) return 0;
    size_t want = std::min<size_t>(n, data_.size() - static_cast<size_t>(offset));
    std::memcpy(buf, data_.data() + offset, want);
    return want;
  }
  std::string Name() const override { return name_; }

 private:
  std::string data_;
  std::string name_;
};

}  // namespace

absl::Status PreadExact(const RandomAccessFile& file, uint64_t offset, size_t n, char* buf,
                        absl::string_view what) {
  absl::StatusOr<size_t> got = file.Pread(offset, n, buf);
  if (!got.ok()) return got.status();
  if (*got != n) {
    return absl::OutOfRangeError(absl::StrCat(file.Name(), ": ", what, " at offset ", offset,
                                              " length ", n, " is past the end (file size ",
                                              file.Size(), ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<RandomAccessFile>> OpenLocalFile(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus(errno, "open", path);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, "fstat", path);
  return std::make_unique<LocalRandomAccessFile>(std::move(fd), static_cast<uint64_t>(st.st_size),
                                                 path);
}

absl::StatusOr<std::unique_ptr<WritableFile>> CreateLocalFile(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd.valid()) return ErrnoStatus(errno, "create", path);
  return std::make_unique<LocalWritableFile>(std::move(fd), path);
}

std::unique_ptr<RandomAccessFile> NewMemoryFile(std::string data, std::string name) {
  return std::make_unique<MemoryFile>(std::move(data), std::move(name));
}

}  // namespace dadi::blockstore
