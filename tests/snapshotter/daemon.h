// Test helpers for the conformance tests: the real dadi-snapshotter binary as a child process
// with its own root and socket, a gRPC client for it, and containerd-like mounting of the
// mounts it returns (with cleanup of everything mounted).
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "containerd/services/snapshots/v1/snapshots.grpc.pb.h"

namespace dadi::testing {

namespace snapshots_pb = ::containerd::services::snapshots::v1;

// A dadi-snapshotter child process. The destructor kills (SIGKILL) and reaps it if it still
// runs.
class SnapshotterDaemon {
 public:
  SnapshotterDaemon(std::string root, std::string socket, std::string log_file);
  ~SnapshotterDaemon();
  SnapshotterDaemon(const SnapshotterDaemon&) = delete;
  SnapshotterDaemon& operator=(const SnapshotterDaemon&) = delete;

  // Starts the binary and waits until its socket accepts connections (or it exits).
  absl::Status Start(const std::vector<std::string>& extra_args = {});
  // SIGTERM, then waits; returns the exit status as an error if it is not 0.
  absl::Status Stop();
  // SIGKILL, then waits.
  void Kill();
  // Waits (up to a minute, a guard against hangs) for the process to exit by itself; returns
  // its wait status.
  absl::StatusOr<int> WaitForExit();
  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }

  std::unique_ptr<snapshots_pb::Snapshots::Stub> Connect() const;
  const std::string& socket() const { return socket_; }
  const std::string& root() const { return root_; }
  std::string Log() const;  // the child's stderr so far

 private:
  absl::Status Wait(int* exit_status);

  std::string root_, socket_, log_file_;
  pid_t pid_ = -1;
};

// Mounts what a snapshotter returned onto `target` the way containerd's mount helper does:
// bind (with "ro" remounted read-only) or overlay; when the overlay options exceed a page,
// lowerdir is made relative to the parent of the layers' longest common prefix and the
// mount is made from there (containerd's compactLowerdirOption). Unmounts everything in the
// destructor.
class Mounter {
 public:
  Mounter() = default;
  ~Mounter();
  Mounter(const Mounter&) = delete;
  Mounter& operator=(const Mounter&) = delete;

  absl::Status Mount(const google::protobuf::RepeatedPtrField<containerd::types::Mount>& mounts,
                     const std::string& target);
  absl::Status Unmount(const std::string& target);

 private:
  std::vector<std::string> mounted_;
};

}  // namespace dadi::testing
