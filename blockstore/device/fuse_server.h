// Our own FUSE server: owns a /dev/fuse connection, its mount and the threads that serve it
// with FuseHandler (fuse_handler.h). Not libfuse, so that a connection can outlive the process
// that initialised it: Release() hands over the fd and the negotiated parameters, Resume()
// serves them again without INIT (the kernel sends INIT once per connection). Between the two,
// requests simply wait in the kernel's queue.
#pragma once

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "blockstore/device/fuse_handler.h"
#include "blockstore/device/mount.h"
#include "blockstore/file/unique_fd.h"

namespace dadi::blockstore {

struct FuseServerOptions {
  // Threads reading /dev/fuse; each holds one request buffer and one read buffer.
  int threads = 4;
  // How long Mount waits for the kernel's INIT.
  absl::Duration init_timeout = absl::Seconds(10);
  FuseHandlerOptions handler;
};

// What a new process needs to resume serving a connection.
struct FuseHandover {
  UniqueFd fd;  // the /dev/fuse connection
  FuseConnParams params;
  std::string mountpoint;
  uint64_t connection_id = 0;
};

class FuseServer {
 public:
  // Opens /dev/fuse, mounts it read-only at `mountpoint` (an existing directory) as
  // "fuse.dadi", starts the threads and waits until INIT is answered.
  static absl::StatusOr<std::unique_ptr<FuseServer>> Mount(const std::string& mountpoint,
                                                           std::shared_ptr<FuseFileTable> table,
                                                           const FuseServerOptions& options = {});
  // Serves a connection initialised by an earlier server (possibly in another process). The
  // table must already hold the files the kernel knows (FuseFileTable::Restore). Then asks the
  // kernel to resend requests a predecessor had read but not answered (ResendPending).
  static absl::StatusOr<std::unique_ptr<FuseServer>> Resume(FuseHandover handover,
                                                            std::shared_ptr<FuseFileTable> table,
                                                            const FuseServerOptions& options = {});

  FuseServer(const FuseServer&) = delete;
  FuseServer& operator=(const FuseServer&) = delete;
  // Tears the connection down: unmounts (lazily if busy), aborts the connection so no request
  // waits on a server that is gone, stops the threads, closes the fd.
  ~FuseServer();

  // Stops serving (requests in progress are answered first) and hands the connection over;
  // the mount stays. The server is inert afterwards.
  FuseHandover Release();

  // FUSE_NOTIFY_RESEND (Linux >= 6.9): the kernel queues again every request that was read from
  // the connection but not answered, e.g. by a predecessor that crashed; without it the callers
  // of those requests would wait forever. Reads are idempotent, so resending is safe.
  // UNIMPLEMENTED on older kernels.
  absl::Status ResendPending();

  const std::string& mountpoint() const { return mountpoint_; }
  // The kernel's number for the connection (/sys/fs/fuse/connections/N).
  uint64_t connection_id() const { return connection_id_; }
  const FuseHandler& handler() const { return *handler_; }
  FuseFileTable& table() { return *table_; }

 private:
  FuseServer(UniqueFd fd, std::string mountpoint, std::shared_ptr<FuseFileTable> table,
             std::unique_ptr<FuseHandler> handler, const FuseServerOptions& options);
  absl::Status Start(size_t request_buffer_size);
  void Serve(size_t request_buffer_size);
  void StopThreads();

  UniqueFd fd_;
  UniqueFd stop_event_;  // eventfd: wakes the threads out of poll
  std::string mountpoint_;
  MountPoint mount_;
  uint64_t connection_id_ = 0;
  std::shared_ptr<FuseFileTable> table_;
  std::unique_ptr<FuseHandler> handler_;
  FuseServerOptions options_;
  std::vector<std::thread> threads_;
};

// Writes to /sys/fs/fuse/connections/<id>/abort (fusectl), failing every pending and future
// request of the connection with ENOTCONN. NOT_FOUND if fusectl is not mounted.
absl::Status AbortFuseConnection(uint64_t connection_id);

}  // namespace dadi::blockstore
