// The snapshotter's view of dadi-blockd: attach a stack of overlaybd layer blobs as a
// read-only file system, detach it again. The snapshot semantics (snapshotter.cc) use only
// this interface; blockd_attacher.h implements it over blockd's gRPC API and the unit tests
// use a fake.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace dadi::snapshotter {

// The facts of one overlaybd layer blob that blockd needs to open it remotely.
struct RemoteLayer {
  std::string digest;      // "sha256:<64 hex>" (containerd.io/snapshot/overlaybd/blob-digest)
  uint64_t size = 0;       // bytes (containerd.io/snapshot/overlaybd/blob-size)
  std::string repository;  // "host[:port]/path" where the blob lives

  bool operator==(const RemoteLayer&) const = default;
};

// A startup trace blob (docs/formats.md, "Startup traces") in the top layer's repository.
struct StartupTraceRef {
  std::string digest;  // "sha256:<64 hex>"
  uint64_t size = 0;

  bool operator==(const StartupTraceRef&) const = default;
};

class BlockAttacher {
 public:
  virtual ~BlockAttacher() = default;

  // Makes sure the stack `layers` (bottom first) is attached as device `id` and returns the
  // directory where its file system is mounted. Idempotent: the snapshotter holds one
  // reference per id however often this is called; calling it for an id that is already
  // attached returns the existing mount point. UNAVAILABLE when blockd cannot be reached.
  // A fresh attachment prefetches `startup_trace` when given.
  virtual absl::StatusOr<std::string> Attach(
      const std::string& id, const std::vector<RemoteLayer>& layers,
      const std::optional<StartupTraceRef>& startup_trace) = 0;

  // Drops the snapshotter's reference on `id`. An id that is not attached is not an error.
  virtual absl::Status Detach(const std::string& id) = 0;
};

}  // namespace dadi::snapshotter
