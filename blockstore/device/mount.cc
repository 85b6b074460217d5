#include "blockstore/device/mount.h"

#include <sys/mount.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "blockstore/device/errno_code.h"
#include "spdlog/spdlog.h"

namespace dadi::blockstore {

absl::StatusOr<MountPoint> MountPoint::Mount(const std::string& source, const std::string& target,
                                             const std::string& fs_type, unsigned long flags,
                                             const std::string& data) {
  if (::mount(source.c_str(), target.c_str(), fs_type.c_str(), flags,
              data.empty() ? nullptr : data.c_str()) != 0) {
    int err = errno;
    std::string message = absl::StrCat("mount ", fs_type, " ", source, " on ", target, " (", data,
                                       "): ", std::strerror(err));
    // EINVAL (a superblock the file system does not recognise, options it rejects) and EUCLEAN
    // (a corrupt file system) say the image or the request is bad, not the system.
    const bool bad_input = err == EINVAL || err == EUCLEAN;
    return absl::Status(bad_input ? absl::StatusCode::kInvalidArgument : DeviceErrnoCode(err),
                        message);
  }
  return MountPoint(target);
}

MountPoint MountPoint::Adopt(std::string target) { return MountPoint(std::move(target)); }

MountPoint::MountPoint(MountPoint&& other) noexcept : target_(std::move(other.target_)) {
  other.target_.clear();
}

MountPoint& MountPoint::operator=(MountPoint&& other) noexcept {
  if (this != &other) {
    if (absl::Status s = Unmount(); !s.ok()) spdlog::error("{}", s.ToString());
    target_ = std::exchange(other.target_, std::string());
  }
  return *this;
}

MountPoint::~MountPoint() {
  if (absl::Status s = Unmount(); !s.ok()) spdlog::error("{}", s.ToString());
}

absl::Status MountPoint::Unmount(bool* lazy) {
  if (lazy != nullptr) *lazy = false;
  if (target_.empty()) return absl::OkStatus();
  if (::umount2(target_.c_str(), UMOUNT_NOFOLLOW) == 0) {
    target_.clear();
    return absl::OkStatus();
  }
  int err = errno;
  if (err == EBUSY) {
    // Someone still has a file open or a cwd below it: take it out of the namespace now; the
    // kernel releases the file system (and its block device) when the last user goes.
    if (::umount2(target_.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) == 0) {
      spdlog::warn("unmount {}: busy, detached lazily", target_);
      if (lazy != nullptr) *lazy = true;
      target_.clear();
      return absl::OkStatus();
    }
    err = errno;
  }
  if (err == EINVAL || err == ENOENT) {
    // Not a mount point (any more): someone else unmounted it.
    target_.clear();
    return absl::OkStatus();
  }
  std::string message = absl::StrCat("unmount ", target_, ": ", std::strerror(err));
  return absl::InternalError(message);
}

std::string MountPoint::Release() { return std::exchange(target_, std::string()); }

bool IsMountPoint(const std::string& path) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    // Fields: id parent major:minor root mount-point ...; spaces in paths are escaped (\040).
    std::istringstream fields(line);
    std::string id, parent, dev, root, mount_point;
    if (!(fields >> id >> parent >> dev >> root >> mount_point)) continue;
    if (mount_point == path) return true;
  }
  return false;
}

}  // namespace dadi::blockstore
