#include "blockstore/device/fuse_server.h"

#include <fcntl.h>
#include <linux/fuse.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace dadi::blockstore {
namespace {

// From Linux 6.9's <linux/fuse.h> (protocol 7.40), newer than the headers we build with.
constexpr int kFuseNotifyResend = 7;

// Replies go straight to /dev/fuse, one writev each.
class FdSink final : public FuseReplySink {
 public:
  explicit FdSink(int fd) : fd_(fd) {}
  void Send(const struct iovec* iov, int iovcnt) override {
    while (::writev(fd_, iov, iovcnt) < 0) {
      if (errno == EINTR) continue;
      // ENOENT: the request was interrupted or aborted meanwhile; nobody waits for the answer.
      if (errno != ENOENT && errno != ENODEV) {
        spdlog::warn("FUSE reply: writev /dev/fuse: {}", std::strerror(errno));
      }
      return;
    }
  }

 private:
  int fd_;
};

// The connection number the kernel uses in /sys/fs/fuse/connections: its dev_t encoding of
// the mount's (anonymous) device number.
absl::StatusOr<uint64_t> ConnectionId(const std::string& mountpoint) {
  struct stat st;
  if (::stat(mountpoint.c_str(), &st) != 0) {
    return absl::InternalError(absl::StrCat("stat ", mountpoint, ": ", std::strerror(errno)));
  }
  return (static_cast<uint64_t>(major(st.st_dev)) << 20) | minor(st.st_dev);
}

}  // namespace

absl::Status AbortFuseConnection(uint64_t connection_id) {
  std::string path = absl::StrCat("/sys/fs/fuse/connections/", connection_id, "/abort");
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd.valid()) {
    return absl::NotFoundError(absl::StrCat("open ", path, ": ", std::strerror(errno)));
  }
  if (::write(fd.get(), "1", 1) != 1) {
    return absl::InternalError(absl::StrCat("write ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

FuseServer::FuseServer(UniqueFd fd, std::string mountpoint, std::shared_ptr<FuseFileTable> table,
                       std::unique_ptr<FuseHandler> handler, const FuseServerOptions& options)
    : fd_(std::move(fd)),
      mountpoint_(std::move(mountpoint)),
      table_(std::move(table)),
      handler_(std::move(handler)),
      options_(options) {}

absl::StatusOr<std::unique_ptr<FuseServer>> FuseServer::Mount(const std::string& mountpoint,
                                                              std::shared_ptr<FuseFileTable> table,
                                                              const FuseServerOptions& options) {
  UniqueFd fd(::open("/dev/fuse", O_RDWR | O_CLOEXEC));
  if (!fd.valid()) {
    return absl::FailedPreconditionError(absl::StrCat("open /dev/fuse: ", std::strerror(errno)));
  }
  auto handler = std::make_unique<FuseHandler>(table, options.handler);
  std::unique_ptr<FuseServer> server(
      new FuseServer(std::move(fd), mountpoint, std::move(table), std::move(handler), options));
  // Read-only, and neither devices nor set-uid files: the root only holds disk images.
  std::string data = absl::StrCat("fd=", server->fd_.get(),
                                  ",rootmode=40000,user_id=0,group_id=0,allow_other,"
                                  "default_permissions");
  absl::StatusOr<MountPoint> mount = MountPoint::Mount(
      "dadi", mountpoint, "fuse.dadi", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, data);
  if (!mount.ok()) return mount.status();
  server->mount_ = *std::move(mount);
  // The kernel queued INIT during mount(2); the threads answer it. Until then every other
  // access to the mount blocks in the kernel, including our own stat below.
  FuseConnParams offered;
  offered.max_write = FuseConnParams::kOfferedMaxWrite;  // INIT itself needs the full buffer
  if (absl::Status s = server->Start(offered.RequestBufferSize()); !s.ok()) return s;
  if (!server->handler_->WaitInitialized(options.init_timeout)) {
    return absl::DeadlineExceededError(absl::StrCat("FUSE mount ", mountpoint,
                                                    ": no INIT from the kernel within ",
                                                    absl::FormatDuration(options.init_timeout)));
  }
  absl::StatusOr<uint64_t> id = ConnectionId(mountpoint);
  if (!id.ok()) return id.status();
  server->connection_id_ = *id;
  return server;
}

absl::StatusOr<std::unique_ptr<FuseServer>> FuseServer::Resume(FuseHandover handover,
                                                               std::shared_ptr<FuseFileTable> table,
                                                               const FuseServerOptions& options) {
  if (!handover.fd.valid()) return absl::InvalidArgumentError("FUSE resume: no fd");
  auto handler = std::make_unique<FuseHandler>(table, options.handler, handover.params);
  std::unique_ptr<FuseServer> server(new FuseServer(std::move(handover.fd), handover.mountpoint,
                                                    std::move(table), std::move(handler), options));
  server->mount_ = MountPoint::Adopt(handover.mountpoint);
  server->connection_id_ = handover.connection_id;
  if (absl::Status s = server->Start(handover.params.RequestBufferSize()); !s.ok()) return s;
  if (absl::Status s = server->ResendPending(); !s.ok()) {
    spdlog::warn("FUSE {}: {}; requests taken by the previous server may never be answered",
                 server->mountpoint_, s.ToString());
  }
  return server;
}

absl::Status FuseServer::ResendPending() {
  fuse_out_header notify{};
  notify.len = sizeof(notify);
  notify.error = kFuseNotifyResend;  // a notification: code in `error`, unique 0
  notify.unique = 0;
  if (::write(fd_.get(), &notify, sizeof(notify)) == static_cast<ssize_t>(sizeof(notify))) {
    return absl::OkStatus();
  }
  int err = errno;
  if (err == EINVAL || err == ENOSYS) {
    return absl::UnimplementedError(
        absl::StrCat("FUSE_NOTIFY_RESEND on ", mountpoint_, ": not supported by this kernel"));
  }
  return absl::InternalError(
      absl::StrCat("FUSE_NOTIFY_RESEND on ", mountpoint_, ": ", std::strerror(err)));
}

absl::Status FuseServer::Start(size_t request_buffer_size) {
  // Several threads poll the fd; a non-blocking read lets the losers of a wake-up go back to
  // poll instead of sleeping in read(2) where the stop event cannot reach them.
  int flags = ::fcntl(fd_.get(), F_GETFL);
  if (flags < 0 || ::fcntl(fd_.get(), F_SETFL, flags | O_NONBLOCK) != 0) {
    return absl::InternalError(absl::StrCat("fcntl /dev/fuse: ", std::strerror(errno)));
  }
  stop_event_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!stop_event_.valid()) {
    return absl::InternalError(absl::StrCat("eventfd: ", std::strerror(errno)));
  }
  int n = std::max(options_.threads, 1);
  for (int i = 0; i < n; ++i) {
    threads_.emplace_back([this, request_buffer_size] { Serve(request_buffer_size); });
  }
  return absl::OkStatus();
}

void FuseServer::Serve(size_t request_buffer_size) {
  std::vector<char> request(request_buffer_size);
  std::vector<char> scratch;
  FdSink sink(fd_.get());
  for (;;) {
    struct pollfd fds[2] = {{fd_.get(), POLLIN, 0}, {stop_event_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      spdlog::error("FUSE {}: poll: {}", mountpoint_, std::strerror(errno));
      return;
    }
    if (fds[1].revents != 0) return;
    ssize_t n = ::read(fd_.get(), request.data(), request.size());
    if (n < 0) {
      int err = errno;
      // EAGAIN: another thread took the request. ENOENT: it was interrupted before we read it.
      if (err == EINTR || err == EAGAIN || err == ENOENT) continue;
      // ENODEV: the connection is gone (unmounted or aborted).
      if (err != ENODEV) spdlog::error("FUSE {}: read: {}", mountpoint_, std::strerror(err));
      return;
    }
    handler_->Handle(request.data(), static_cast<size_t>(n), &scratch, &sink);
  }
}

void FuseServer::StopThreads() {
  if (stop_event_.valid()) {
    uint64_t one = 1;
    // The counter stays readable until reset, so every thread sees it.
    if (::write(stop_event_.get(), &one, sizeof(one)) != sizeof(one)) {
      spdlog::error("FUSE {}: eventfd write: {}", mountpoint_, std::strerror(errno));
    }
  }
  for (std::thread& t : threads_) t.join();
  threads_.clear();
  stop_event_.reset();
}

FuseHandover FuseServer::Release() {
  StopThreads();
  FuseHandover handover;
  // Blocking again for whoever reads next; the flag lives in the shared open file description.
  int flags = ::fcntl(fd_.get(), F_GETFL);
  if (flags >= 0) ::fcntl(fd_.get(), F_SETFL, flags & ~O_NONBLOCK);
  handover.fd = std::move(fd_);
  handover.params = handler_->params().value_or(FuseConnParams{});
  handover.mountpoint = mount_.Release();
  handover.connection_id = connection_id_;
  return handover;
}

FuseServer::~FuseServer() {
  bool lazy = false;
  if (absl::Status s = mount_.Unmount(&lazy); !s.ok()) spdlog::error("{}", s.ToString());
  if (fd_.valid() && connection_id_ != 0) {
    // Closing our fd aborts the connection only if nobody else (a keeper) holds a copy; fusectl
    // aborts it regardless. Without fusectl, closing is the best we can do.
    absl::Status s = AbortFuseConnection(connection_id_);
    if (!s.ok() && !absl::IsNotFound(s)) spdlog::warn("{}", s.ToString());
  }
  StopThreads();
  fd_.reset();
}

}  // namespace dadi::blockstore
