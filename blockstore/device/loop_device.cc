#include "blockstore/device/loop_device.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "blockstore/device/errno_code.h"
#include "spdlog/spdlog.h"

namespace dadi::blockstore {
namespace {

constexpr int kLoopMajor = 7;

absl::Status ErrnoError(int err, absl::string_view what) {
  return absl::Status(DeviceErrnoCode(err), absl::StrCat(what, ": ", std::strerror(err)));
}

std::string ReadSysfsLine(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

// Makes sure /dev/loopN exists. Containers often have a static /dev without the nodes the
// kernel creates on demand; the device numbers come from sysfs.
absl::Status EnsureNode(int number, const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) {
    if (!S_ISBLK(st.st_mode)) {
      return absl::FailedPreconditionError(absl::StrCat(path, " is not a block device"));
    }
    return absl::OkStatus();
  }
  if (errno != ENOENT) return ErrnoError(errno, absl::StrCat("stat ", path));
  unsigned major = kLoopMajor, minor = static_cast<unsigned>(number);
  std::string dev = ReadSysfsLine(absl::StrCat("/sys/block/loop", number, "/dev"));
  if (!dev.empty() && std::sscanf(dev.c_str(), "%u:%u", &major, &minor) != 2) {
    return absl::InternalError(absl::StrCat("/sys/block/loop", number, "/dev: \"", dev, "\""));
  }
  if (::mknod(path.c_str(), S_IFBLK | 0600, makedev(major, minor)) != 0 && errno != EEXIST) {
    return ErrnoError(errno, absl::StrCat("mknod ", path));
  }
  return absl::OkStatus();
}

// Binds with the pre-5.8 ioctls. EBUSY from LOOP_SET_FD means another process won the race.
int BindLegacy(int loop_fd, int backing_fd, const std::string& backing_path,
               const LoopOptions& options) {
  if (::ioctl(loop_fd, LOOP_SET_FD, backing_fd) != 0) return errno;
  loop_info64 info{};
  info.lo_flags =
      (options.read_only ? LO_FLAGS_READ_ONLY : 0) | (options.autoclear ? LO_FLAGS_AUTOCLEAR : 0);
  std::strncpy(reinterpret_cast<char*>(info.lo_file_name), backing_path.c_str(), LO_NAME_SIZE - 1);
  if (::ioctl(loop_fd, LOOP_SET_STATUS64, &info) != 0) {
    int err = errno;
    ::ioctl(loop_fd, LOOP_CLR_FD, 0);
    return err;
  }
  if (options.block_size != 0 && ::ioctl(loop_fd, LOOP_SET_BLOCK_SIZE, options.block_size) != 0) {
    int err = errno;
    ::ioctl(loop_fd, LOOP_CLR_FD, 0);
    return err;
  }
  if (::ioctl(loop_fd, LOOP_SET_DIRECT_IO, options.direct_io ? 1UL : 0UL) != 0 &&
      options.direct_io) {
    int err = errno;
    ::ioctl(loop_fd, LOOP_CLR_FD, 0);
    return err;
  }
  return 0;
}

}  // namespace

std::string LoopBackingFile(int number) {
  std::string line = ReadSysfsLine(absl::StrCat("/sys/block/loop", number, "/loop/backing_file"));
  return line;
}

absl::StatusOr<LoopDevice> LoopDevice::Attach(const std::string& backing_path,
                                              const LoopOptions& options) {
  UniqueFd backing(
      ::open(backing_path.c_str(), (options.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC));
  if (!backing.valid()) return ErrnoError(errno, absl::StrCat("open ", backing_path));
  UniqueFd control(::open("/dev/loop-control", O_RDWR | O_CLOEXEC));
  if (!control.valid()) return ErrnoError(errno, "open /dev/loop-control");

  int last_err = 0;
  for (int attempt = 0; attempt < std::max(options.max_attempts, 1); ++attempt) {
    int number = ::ioctl(control.get(), LOOP_CTL_GET_FREE);
    if (number < 0) return ErrnoError(errno, "LOOP_CTL_GET_FREE");
    std::string path = absl::StrCat("/dev/loop", number);
    if (absl::Status s = EnsureNode(number, path); !s.ok()) return s;
    UniqueFd loop(::open(path.c_str(), (options.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC));
    if (!loop.valid()) {
      // The device can vanish between GET_FREE and open (LOOP_CTL_REMOVE elsewhere).
      if (errno == ENXIO || errno == ENOENT) {
        last_err = errno;
        continue;
      }
      return ErrnoError(errno, absl::StrCat("open ", path));
    }

    loop_config config{};
    config.fd = static_cast<uint32_t>(backing.get());
    config.block_size = options.block_size;
    config.info.lo_flags = (options.read_only ? LO_FLAGS_READ_ONLY : 0) |
                           (options.autoclear ? LO_FLAGS_AUTOCLEAR : 0) |
                           (options.direct_io ? LO_FLAGS_DIRECT_IO : 0);
    std::strncpy(reinterpret_cast<char*>(config.info.lo_file_name), backing_path.c_str(),
                 LO_NAME_SIZE - 1);
    int err = ENOTTY;
    if (options.use_loop_configure) {
      err = ::ioctl(loop.get(), LOOP_CONFIGURE, &config) == 0 ? 0 : errno;
    }
    if (err != 0) {
      if (err == ENOTTY || err == EINVAL) {
        // Kernel before 5.8 (or one that refuses a field): the older, non-atomic way.
        err = BindLegacy(loop.get(), backing.get(), backing_path, options);
      }
    }
    if (err == 0) {
      LoopDevice device(std::move(loop), number, std::move(path));
      if (options.read_ahead_kb.has_value() &&
          ::ioctl(device.fd_.get(), BLKRASET,
                  static_cast<unsigned long>(*options.read_ahead_kb) * 2) != 0) {
        return ErrnoError(errno, absl::StrCat("BLKRASET ", device.path_));  // unbinds
      }
      return device;
    }
    if (err != EBUSY) {
      return ErrnoError(err, absl::StrCat("bind ", path, " to ", backing_path));
    }
    // Another process bound the same free device between GET_FREE and our ioctl: ask again.
    last_err = err;
  }
  return ErrnoError(last_err, absl::StrCat("bind a loop device to ", backing_path, " after ",
                                           options.max_attempts, " attempts"));
}

LoopDevice::LoopDevice(LoopDevice&& other) noexcept
    : fd_(std::move(other.fd_)),
      number_(std::exchange(other.number_, -1)),
      path_(std::exchange(other.path_, std::string())) {}

LoopDevice& LoopDevice::operator=(LoopDevice&& other) noexcept {
  if (this != &other) {
    if (absl::Status s = Detach(); !s.ok()) spdlog::error("{}", s.ToString());
    fd_ = std::move(other.fd_);
    number_ = std::exchange(other.number_, -1);
    path_ = std::exchange(other.path_, std::string());
  }
  return *this;
}

LoopDevice::~LoopDevice() {
  if (absl::Status s = Detach(); !s.ok()) spdlog::error("{}", s.ToString());
}

absl::Status LoopDevice::Detach() {
  if (!fd_.valid()) return absl::OkStatus();
  absl::Status status;
  if (::ioctl(fd_.get(), LOOP_CLR_FD, 0) != 0) {
    int err = errno;
    // ENXIO: already unbound (autoclear after a crash elsewhere). Anything else: the kernel
    // keeps the binding until the last opener closes, thanks to autoclear; report it.
    if (err != ENXIO) status = ErrnoError(err, absl::StrCat("LOOP_CLR_FD ", path_));
  }
  fd_.reset();
  number_ = -1;
  path_.clear();
  return status;
}

}  // namespace dadi::blockstore
