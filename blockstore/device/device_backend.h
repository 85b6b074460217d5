// How dadi-blockd exposes a virtual disk to the kernel: as a read-only block device with the
// disk's file system mounted. The first backend is FUSE + loop (fuse_loop_backend.h); ublk can
// follow where kernels have it, behind the same few calls.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "blockstore/file/file.h"

namespace dadi::blockstore {

struct AttachOptions {
  // File system inside the disk ("ext4", "erofs"); empty: expose the block device only.
  std::string fs_type = "ext4";
  // Mount options; empty picks the read-only defaults of the type ("noload" for ext4: never
  // replay a journal on a read-only image).
  std::string mount_data;
};

struct AttachedDevice {
  std::string id;
  std::string device_path;  // e.g. /dev/loop3
  std::string mount_point;  // empty when AttachOptions::fs_type was empty
  uint64_t size = 0;        // bytes
};

// Thread-safe.
class DeviceBackend {
 public:
  virtual ~DeviceBackend() = default;

  // Exposes `disk` (pread must be thread-safe) as device `id` ([A-Za-z0-9._-], at most 255
  // bytes) and mounts its file system read-only. ALREADY_EXISTS if `id` is attached.
  virtual absl::StatusOr<AttachedDevice> Attach(absl::string_view id,
                                                std::shared_ptr<RandomAccessFile> disk,
                                                const AttachOptions& options) = 0;
  // Unmounts and removes the device. NOT_FOUND if `id` is not attached.
  virtual absl::Status Detach(absl::string_view id) = 0;
  // Announces a new size of the disk to the kernel. May be UNIMPLEMENTED.
  virtual absl::Status Resize(absl::string_view id, uint64_t new_size) = 0;
  // Attached devices, ordered by id.
  virtual std::vector<AttachedDevice> List() const = 0;
};

}  // namespace dadi::blockstore
