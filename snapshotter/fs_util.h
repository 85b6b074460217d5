// File-system helpers of the snapshotter: disk usage and tolerant tree removal.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "snapshotter/types.h"

namespace dadi::snapshotter {

// Bytes (allocated blocks × 512) and distinct inodes below `path`, `path` included, not
// following symlinks; hard links count once. As containerd's fs.DiskUsage counts them.
absl::StatusOr<Usage> DiskUsage(const std::string& path);

// Removes `path` and everything below it. A path that is (or becomes) missing is not an error,
// so two removers racing on one tree both succeed.
absl::Status RemoveTree(const std::string& path);

// Creates `path` with `mode` (not subject to the umask's group/other bits it keeps); OK if it
// exists as a directory.
absl::Status MakeDir(const std::string& path, unsigned mode);

absl::Status ErrnoStatus(int err, const std::string& what);

// fsync of a directory: makes the renames and creations in it durable.
absl::Status SyncDir(const std::string& path);

// Names in a directory, without "." and "..". A missing directory has none.
absl::StatusOr<std::vector<std::string>> ListDir(const std::string& path);

// An owned file descriptor, closed on destruction.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd();

  int get() const { return fd_; }
  int release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_ = -1;
};

}  // namespace dadi::snapshotter
