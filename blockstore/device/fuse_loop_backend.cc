#include "blockstore/device/fuse_loop_backend.h"

#include <dirent.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <utility>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace dadi::blockstore {
namespace {

absl::Status MakeDir(const std::string& path, mode_t mode) {
  if (::mkdir(path.c_str(), mode) == 0 || errno == EEXIST) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("mkdir ", path, ": ", std::strerror(errno)));
}

// A blockd that died (SIGKILL, OOM) leaves its FUSE mount, aborted, and its devices' mounts on
// top. Its connection is gone for good (nobody holds its /dev/fuse fd), so every read of them
// already fails with EIO; containers still using them keep failing until restarted, while their
// upper dirs are untouched. The mounts are detached lazily so that this blockd can start and
// attach the same images again; the loop devices clear themselves (autoclear) once the last
// user is gone. A mount that still answers belongs to a running blockd: refused.
absl::Status DetachStaleMounts(const std::string& fuse_dir, const std::string& mnt_dir) {
  if (IsMountPoint(fuse_dir)) {
    // statfs always asks the server (stat may answer from cached attributes): an aborted
    // connection says ENOTCONN, anything else means someone serves it.
    struct statfs st;
    if (::statfs(fuse_dir.c_str(), &st) == 0 || errno != ENOTCONN) {
      return absl::FailedPreconditionError(
          absl::StrCat("FUSE loop backend: ", fuse_dir, " is served by a running dadi-blockd"));
    }
  }
  if (DIR* dir = ::opendir(mnt_dir.c_str())) {
    while (const dirent* e = ::readdir(dir)) {
      const std::string name = e->d_name;
      if (name == "." || name == "..") continue;
      const std::string path = absl::StrCat(mnt_dir, "/", name);
      if (IsMountPoint(path)) {
        spdlog::warn("detaching {}, left by a dadi-blockd that stopped without cleaning up", path);
        if (::umount2(path.c_str(), MNT_DETACH) != 0) {
          spdlog::warn("umount {}: {}", path, std::strerror(errno));
        }
      }
      ::rmdir(path.c_str());  // only an empty directory goes
    }
    ::closedir(dir);
  }
  if (IsMountPoint(fuse_dir)) {
    spdlog::warn("detaching {}, the FUSE mount of a dadi-blockd that died", fuse_dir);
    if (::umount2(fuse_dir.c_str(), MNT_DETACH) != 0) {
      return absl::InternalError(absl::StrCat("umount ", fuse_dir, ": ", std::strerror(errno)));
    }
  }
  return absl::OkStatus();
}

std::string DefaultMountData(const std::string& fs_type) {
  // A read-only image must not have its journal replayed (that would write to it).
  if (fs_type == "ext4" || fs_type == "ext3") return "noload";
  return "";
}

}  // namespace

absl::StatusOr<std::unique_ptr<FuseLoopBackend>> FuseLoopBackend::Create(
    const FuseLoopBackendOptions& options) {
  const std::string& state = options.state_dir;
  if (state.empty() || state[0] != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("FUSE loop backend: state directory \"", state, "\" is not absolute"));
  }
  for (const std::string& dir : {state, state + "/fuse", state + "/mnt"}) {
    if (absl::Status s = MakeDir(dir, 0700); !s.ok()) return s;
  }
  const std::string fuse_dir = state + "/fuse";
  if (absl::Status s = DetachStaleMounts(fuse_dir, state + "/mnt"); !s.ok()) return s;
  auto table = std::make_shared<FuseFileTable>();
  FuseServerOptions fuse = options.fuse;
  if (fuse.handler.mtime_sec == 0) fuse.handler.mtime_sec = static_cast<int64_t>(::time(nullptr));
  absl::StatusOr<std::unique_ptr<FuseServer>> server = FuseServer::Mount(fuse_dir, table, fuse);
  if (!server.ok()) return server.status();
  return std::unique_ptr<FuseLoopBackend>(
      new FuseLoopBackend(state, *std::move(server), std::move(table), options));
}

FuseLoopBackend::FuseLoopBackend(std::string state_dir, std::unique_ptr<FuseServer> server,
                                 std::shared_ptr<FuseFileTable> table,
                                 const FuseLoopBackendOptions& options)
    : state_dir_(std::move(state_dir)),
      options_(options),
      table_(std::move(table)),
      server_(std::move(server)) {}

FuseLoopBackend::~FuseLoopBackend() {
  absl::MutexLock lock(&mu_);
  for (auto& [id, device] : devices_) {
    if (absl::Status s = Teardown(device); !s.ok()) spdlog::error("{}", s.ToString());
  }
  devices_.clear();
  lingering_.clear();
  // Unmounts /fuse and aborts the connection: lazily unmounted file systems still reading
  // through a loop device get EIO from now on instead of waiting for a server that is gone.
  server_.reset();
}

std::string FuseLoopBackend::FusePath(absl::string_view id) const {
  return absl::StrCat(state_dir_, "/fuse/", id);
}

void FuseLoopBackend::ReapLingering() {
  for (auto it = lingering_.begin(); it != lingering_.end();) {
    if (LoopBackingFile(it->second) == FusePath(it->first)) {
      ++it;
      continue;
    }
    if (absl::Status s = table_->Remove(it->first); !s.ok()) spdlog::warn("{}", s.ToString());
    it = lingering_.erase(it);
  }
}

absl::StatusOr<AttachedDevice> FuseLoopBackend::Attach(absl::string_view id,
                                                       std::shared_ptr<RandomAccessFile> disk,
                                                       const AttachOptions& options) {
  if (absl::Status s = FuseFileTable::ValidateName(id); !s.ok()) return s;
  if (disk == nullptr) return absl::InvalidArgumentError("Attach: null disk");
  absl::MutexLock lock(&mu_);
  ReapLingering();
  if (devices_.find(id) != devices_.end()) {
    return absl::AlreadyExistsError(absl::StrCat("device ", id, " is already attached"));
  }
  if (lingering_.find(id) != lingering_.end()) {
    return absl::UnavailableError(
        absl::StrCat("device ", id, " was detached but its file system is still in use"));
  }
  const uint64_t size = disk->Size();
  absl::StatusOr<uint64_t> ino = table_->Add(id, std::move(disk));
  if (!ino.ok()) return ino.status();
  const std::string fuse_path = FusePath(id);
  Device device;
  device.info.id = std::string(id);
  device.info.size = size;
  // From here on every failure unwinds what was done (the RAII members, then the file).
  auto fail = [&](absl::Status status) {
    device.mount.Unmount().IgnoreError();
    device.loop.Detach().IgnoreError();
    if (!device.info.mount_point.empty()) ::rmdir(device.info.mount_point.c_str());
    table_->Remove(id).IgnoreError();
    return status;
  };
  absl::StatusOr<LoopDevice> loop = LoopDevice::Attach(fuse_path, options_.loop);
  if (!loop.ok()) return fail(loop.status());
  device.loop = *std::move(loop);
  device.info.device_path = device.loop.path();
  if (!options.fs_type.empty()) {
    std::string mount_point = absl::StrCat(state_dir_, "/mnt/", id);
    if (absl::Status s = MakeDir(mount_point, 0755); !s.ok()) return fail(s);
    device.info.mount_point = mount_point;
    std::string data =
        options.mount_data.empty() ? DefaultMountData(options.fs_type) : options.mount_data;
    // Only read-only: set-uid binaries and device nodes of the image must work in containers.
    absl::StatusOr<MountPoint> mount =
        MountPoint::Mount(device.info.device_path, mount_point, options.fs_type, MS_RDONLY, data);
    if (!mount.ok()) return fail(mount.status());
    device.mount = *std::move(mount);
  }
  AttachedDevice info = device.info;
  devices_.emplace(std::string(id), std::move(device));
  return info;
}

absl::Status FuseLoopBackend::Teardown(Device& device) {
  const std::string& id = device.info.id;
  bool lazy = false;
  if (absl::Status s = device.mount.Unmount(&lazy); !s.ok()) return s;
  if (!device.info.mount_point.empty() && ::rmdir(device.info.mount_point.c_str()) != 0 &&
      errno != ENOENT) {
    spdlog::warn("rmdir {}: {}", device.info.mount_point, std::strerror(errno));
  }
  const int number = device.loop.number();
  if (absl::Status s = device.loop.Detach(); !s.ok()) return s;
  // A lazily unmounted file system keeps the loop device open and bound (it clears itself when
  // that file system goes, autoclear); until then its reads still need the FUSE file.
  if (number >= 0 && LoopBackingFile(number) == FusePath(id)) {
    spdlog::warn("device {}: {} is still in use; its FUSE file stays until it is released", id,
                 device.info.device_path);
    lingering_[id] = number;
    return absl::OkStatus();
  }
  return table_->Remove(id);
}

absl::Status FuseLoopBackend::Detach(absl::string_view id) {
  absl::MutexLock lock(&mu_);
  auto it = devices_.find(id);
  if (it == devices_.end()) {
    return absl::NotFoundError(absl::StrCat("device ", id, " is not attached"));
  }
  absl::Status status = Teardown(it->second);
  if (!status.ok()) return status;
  devices_.erase(it);
  ReapLingering();
  return absl::OkStatus();
}

absl::Status FuseLoopBackend::Resize(absl::string_view id, uint64_t new_size) {
  return absl::UnimplementedError(
      absl::StrCat("resize of device ", id, " to ", new_size, " bytes: not supported yet"));
}

std::vector<AttachedDevice> FuseLoopBackend::List() const {
  absl::MutexLock lock(&mu_);
  std::vector<AttachedDevice> out;
  out.reserve(devices_.size());
  for (const auto& [id, device] : devices_) out.push_back(device.info);
  return out;
}

}  // namespace dadi::blockstore
