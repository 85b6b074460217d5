// A loop block device bound to a file, owned by an object: unbound on destruction.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "blockstore/file/unique_fd.h"

namespace dadi::blockstore {

struct LoopOptions {
  bool read_only = true;
  // The device clears itself when its last opener (our fd, a mount) goes away, so a crash of
  // the owner leaves nothing bound once the mount is gone.
  bool autoclear = true;
  uint32_t block_size = 4096;
  // Direct I/O on the backing file: the loop device's reads reach the backing file's
  // server as they are, without a second page cache and a second readahead under the file
  // system's own.
  bool direct_io = false;
  // The device's readahead (read_ahead_kb); unset leaves the kernel's default. Every page the
  // file system reads ahead of a lazily loaded image is fetched from the registry.
  std::optional<uint32_t> read_ahead_kb;
  // How often to retry when another process binds the free device we were given first.
  int max_attempts = 16;
  // LOOP_CONFIGURE when the kernel has it; false forces the pre-5.8 ioctls (for tests).
  bool use_loop_configure = true;
};

class LoopDevice {
 public:
  // Binds a free loop device to `backing_path` (opened read-only when options.read_only).
  // Uses LOOP_CONFIGURE (Linux >= 5.8) and falls back to LOOP_SET_FD + LOOP_SET_STATUS64.
  // Creates /dev/loopN if the container's /dev lacks it.
  static absl::StatusOr<LoopDevice> Attach(const std::string& backing_path,
                                           const LoopOptions& options = {});

  LoopDevice() = default;
  LoopDevice(LoopDevice&& other) noexcept;
  LoopDevice& operator=(LoopDevice&& other) noexcept;
  LoopDevice(const LoopDevice&) = delete;
  LoopDevice& operator=(const LoopDevice&) = delete;
  // Detaches; errors are logged.
  ~LoopDevice();

  // LOOP_CLR_FD and close. If the device is still open elsewhere (a lazily unmounted file
  // system), the kernel clears it when that user goes (autoclear). Idempotent.
  absl::Status Detach();

  // "/dev/loopN", empty when not attached.
  const std::string& path() const { return path_; }
  int number() const { return number_; }
  // The open device (read-only).
  int fd() const { return fd_.get(); }

 private:
  LoopDevice(UniqueFd fd, int number, std::string path)
      : fd_(std::move(fd)), number_(number), path_(std::move(path)) {}
  UniqueFd fd_;
  int number_ = -1;
  std::string path_;
};

// Whether /sys/block/loopN is bound to a file, and that file's path (empty when unbound).
std::string LoopBackingFile(int number);

}  // namespace dadi::blockstore
