// A mount(2) owned by an object: unmounted on destruction, lazily when it is busy.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace dadi::blockstore {

class MountPoint {
 public:
  // mount(2) of `source` on `target` (an existing directory). `fs_type` e.g. "ext4", "erofs",
  // "fuse.dadi"; `flags` MS_*; `data` the file system's option string.
  static absl::StatusOr<MountPoint> Mount(const std::string& source, const std::string& target,
                                          const std::string& fs_type, unsigned long flags,
                                          const std::string& data);
  // Takes over an existing mount (e.g. after a restart) without mounting.
  static MountPoint Adopt(std::string target);

  MountPoint() = default;
  MountPoint(MountPoint&& other) noexcept;
  MountPoint& operator=(MountPoint&& other) noexcept;
  MountPoint(const MountPoint&) = delete;
  MountPoint& operator=(const MountPoint&) = delete;
  // Unmounts (see Unmount); errors are logged.
  ~MountPoint();

  // umount2(target, 0); if the mount is busy, detaches it lazily (MNT_DETACH): it disappears
  // from the namespace now and the file system is released when its last user goes. Sets
  // *lazy (if given) when that happened. Idempotent.
  absl::Status Unmount(bool* lazy = nullptr);
  // Forgets the mount without unmounting it (handover to another owner).
  std::string Release();

  const std::string& target() const { return target_; }
  bool mounted() const { return !target_.empty(); }

 private:
  explicit MountPoint(std::string target) : target_(std::move(target)) {}
  std::string target_;
};

// Whether `path` is the mount point of something in this process's mount namespace
// (/proc/self/mountinfo; the path must be absolute and canonical).
bool IsMountPoint(const std::string& path);

}  // namespace dadi::blockstore
