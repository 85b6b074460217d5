// A startup trace's ranges as files of the disk's file system: which files hold the traced
// bytes (found once, when the trace is handed out), and reading those bytes ahead into each
// file's page cache when the image is attached again.
//
// Why: the node cache and block cache make a traced read cheap for blockd, but every read the
// container makes still travels page cache → ext4 → loop → FUSE → blockd and back, a round trip
// of context switches for each of a few hundred reads while the container starts. Data that is
// already in the file's page cache costs the container none of that.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "blockstore/file/file.h"
#include "blockstore/remote/startup_trace.h"

namespace dadi::blockstore::blockd {

// The regular files of the file system mounted at `mount_point` (not crossing into other
// mounts) whose blocks hold parts of `ranges` (byte ranges of the device it is mounted from),
// with the byte ranges of each file that hold them. Files come in the order of the first range
// they hold (first accessed first). Found with FIEMAP, which reports where each file's extents
// are on the device. Gives up after `budget` (DEADLINE_EXCEEDED).
absl::StatusOr<std::vector<TracedFile>> MapRangesToFiles(const std::string& mount_point,
                                                         const std::vector<ByteRange>& ranges,
                                                         absl::Duration budget);

struct FilesReadAhead {
  size_t files = 0;    // opened and read ahead
  uint64_t bytes = 0;  // asked for
};

// Reads the ranges of `files` into their page cache (and nothing around them), in order, until
// `stop` or `max_bytes` asked for. Paths are resolved under `mount_point` only (no symlinks, no
// "..", no other mounts); a file that is missing or not a regular file is skipped, unopened.
FilesReadAhead ReadFilesAhead(const std::string& mount_point, const std::vector<TracedFile>& files,
                              uint64_t max_bytes, const std::atomic<bool>& stop);

}  // namespace dadi::blockstore::blockd
