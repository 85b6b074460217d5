// The FUSE + loop device backend. One FUSE mount per backend at <state>/fuse shows one
// read-only file per attached disk; a loop device is bound to that file and its file system is
// mounted read-only at <state>/mnt/<id>.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "blockstore/device/device_backend.h"
#include "blockstore/device/fuse_server.h"
#include "blockstore/device/loop_device.h"
#include "blockstore/device/mount.h"

namespace dadi::blockstore {

struct FuseLoopBackendOptions {
  // Absolute directory for the FUSE mount and the device mount points; created if missing.
  std::string state_dir;
  FuseServerOptions fuse;
  LoopOptions loop;
};

class FuseLoopBackend final : public DeviceBackend {
 public:
  static absl::StatusOr<std::unique_ptr<FuseLoopBackend>> Create(
      const FuseLoopBackendOptions& options);
  FuseLoopBackend(const FuseLoopBackend&) = delete;
  FuseLoopBackend& operator=(const FuseLoopBackend&) = delete;
  // Detaches every device (lazily where busy) and unmounts the FUSE mount, aborting its
  // connection: whoever still reads gets EIO, nobody hangs.
  ~FuseLoopBackend() override;

  absl::StatusOr<AttachedDevice> Attach(absl::string_view id,
                                        std::shared_ptr<RandomAccessFile> disk,
                                        const AttachOptions& options) override;
  absl::Status Detach(absl::string_view id) override;
  // UNIMPLEMENTED for now: needs FUSE_NOTIFY_INVAL_INODE and LOOP_SET_CAPACITY.
  absl::Status Resize(absl::string_view id, uint64_t new_size) override;
  std::vector<AttachedDevice> List() const override;

  // <state>/fuse/<id>: the file the loop device reads.
  std::string FusePath(absl::string_view id) const;
  const FuseServer& fuse_server() const { return *server_; }

 private:
  struct Device {
    AttachedDevice info;
    LoopDevice loop;
    MountPoint mount;
  };
  FuseLoopBackend(std::string state_dir, std::unique_ptr<FuseServer> server,
                  std::shared_ptr<FuseFileTable> table, const FuseLoopBackendOptions& options);
  // Unmounts, unbinds, removes the FUSE file (kept while a lazily unmounted file system may
  // still read through the loop device).
  absl::Status Teardown(Device& device) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops FUSE files of devices whose loop binding has since gone away.
  void ReapLingering() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string state_dir_;
  const FuseLoopBackendOptions options_;
  std::shared_ptr<FuseFileTable> table_;
  std::unique_ptr<FuseServer> server_;
  mutable absl::Mutex mu_;
  std::map<std::string, Device, std::less<>> devices_ ABSL_GUARDED_BY(mu_);
  // id -> loop number of devices detached while their file system was still busy.
  std::map<std::string, int, std::less<>> lingering_ ABSL_GUARDED_BY(mu_);
};

}  // namespace dadi::blockstore
