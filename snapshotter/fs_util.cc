#include "snapshotter/fs_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace dadi::snapshotter {

absl::Status ErrnoStatus(int err, const std::string& what) {
  std::string msg = absl::StrCat(what, ": ", std::strerror(err));
  switch (err) {
    case ENOENT:
      return absl::NotFoundError(msg);
    case EEXIST:
      return absl::AlreadyExistsError(msg);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(msg);
    case ENOSPC:
    case EDQUOT:
      return absl::ResourceExhaustedError(msg);
    default:
      return absl::InternalError(msg);
  }
}

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.release();
  }
  return *this;
}

UniqueFd::~UniqueFd() {
  if (fd_ >= 0) ::close(fd_);
}

absl::StatusOr<std::vector<std::string>> ListDir(const std::string& path) {
  DIR* dir = ::opendir(path.c_str());
  if (dir == nullptr) {
    if (errno == ENOENT) return std::vector<std::string>{};
    return ErrnoStatus(errno, "opendir " + path);
  }
  std::vector<std::string> names;
  while (true) {
    errno = 0;
    const dirent* ent = ::readdir(dir);
    if (ent == nullptr) break;
    if (std::strcmp(ent->d_name, ".") == 0 || std::strcmp(ent->d_name, "..") == 0) continue;
    names.emplace_back(ent->d_name);
  }
  const int err = errno;
  ::closedir(dir);
  if (err != 0) return ErrnoStatus(err, "readdir " + path);
  return names;
}

absl::StatusOr<Usage> DiskUsage(const std::string& path) {
  // Iterative walk (no recursion, no open directory per level): deep trees are cheap.
  std::set<std::pair<dev_t, ino_t>> seen;
  Usage usage;
  std::vector<std::string> pending{path};
  while (!pending.empty()) {
    std::string p = std::move(pending.back());
    pending.pop_back();
    struct stat st;
    if (::lstat(p.c_str(), &st) != 0) {
      if (errno == ENOENT && p != path) continue;  // vanished while walking
      return ErrnoStatus(errno, "lstat " + p);
    }
    if (seen.emplace(st.st_dev, st.st_ino).second) {
      usage.inodes++;
      usage.size += static_cast<int64_t>(st.st_blocks) * 512;
    }
    if (S_ISDIR(st.st_mode)) {
      auto names = ListDir(p);
      if (!names.ok()) return names.status();
      for (std::string& n : *names) pending.push_back(absl::StrCat(p, "/", n));
    }
  }
  return usage;
}

absl::Status RemoveTree(const std::string& path) {
  std::error_code ec;
  for (int attempt = 0; attempt < 3; ++attempt) {
    std::filesystem::remove_all(path, ec);
    if (!ec || ec == std::errc::no_such_file_or_directory) {
      struct stat st;
      if (::lstat(path.c_str(), &st) != 0 && errno == ENOENT) return absl::OkStatus();
    }
  }
  return absl::InternalError(
      absl::StrCat("remove ", path, ": ", ec ? ec.message() : "still present"));
}

absl::Status SyncDir(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoStatus(errno, "open " + path);
  if (::fsync(fd.get()) != 0) return ErrnoStatus(errno, "fsync " + path);
  return absl::OkStatus();
}

absl::Status MakeDir(const std::string& path, unsigned mode) {
  if (::mkdir(path.c_str(), mode) != 0) {
    if (errno != EEXIST) return ErrnoStatus(errno, "mkdir " + path);
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) return ErrnoStatus(errno, "stat " + path);
    if (!S_ISDIR(st.st_mode)) return absl::FailedPreconditionError(path + " is not a directory");
    return absl::OkStatus();
  }
  if (::chmod(path.c_str(), mode) != 0) return ErrnoStatus(errno, "chmod " + path);
  return absl::OkStatus();
}

}  // namespace dadi::snapshotter
