// The operating system behind two small interfaces. Everything in libblockstore reads and writes
// through them, so a ZFile or LSMT layer can sit on a local file, a registry blob, a cached blob
// or a fault-injecting file in tests without knowing which.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dadi::blockstore {

// Bytes [offset, offset + length) of some file.
struct ByteRange {
  uint64_t offset = 0;
  uint64_t length = 0;
  bool operator==(const ByteRange& o) const { return offset == o.offset && length == o.length; }
};

class RandomAccessFile;

// Bytes of a file that stores them itself (the end of a chain of views): see Locate.
struct FileExtent {
  const RandomAccessFile* file = nullptr;
  ByteRange range;
};

// A file that is read at arbitrary offsets. Implementations are safe for concurrent use by
// several threads: Pread has no file position.
class RandomAccessFile {
 public:
  virtual ~RandomAccessFile() = default;

  // Size of the file in bytes. Fixed for the lifetime of the object.
  virtual uint64_t Size() const = 0;

  // Reads min(n, Size() - offset) bytes at `offset` into `buf` and returns how many were read.
  // A short count happens only at end of file; an offset at or past the end reads 0 bytes.
  // Errors: the implementation's I/O failure (UNAVAILABLE for a remote that could not be
  // reached, DATA_LOSS for bytes that failed verification, ...).
  virtual absl::StatusOr<size_t> Pread(uint64_t offset, size_t n, char* buf) const = 0;

  // Human-readable name used in error messages (a path, or a blob digest).
  virtual std::string Name() const = 0;

  // Drops any copy of [offset, offset + n) kept on the way to the origin (a node cache, bytes
  // held in memory), so that the next Pread of the range refetches it from the origin (the
  // registry). Readers call it when bytes fail verification (a ZFile block's CRC) and then reread
  // once. Returns OK when a refetch is possible; UNIMPLEMENTED (the default) when there is no
  // copy to drop, so rereading would give the same bytes (local and in-memory files); another
  // error when dropping failed. Views onto another file forward it. Thread-safe like Pread.
  virtual absl::Status Invalidate(uint64_t offset, uint64_t n) const {
    (void)offset;
    (void)n;
    return absl::UnimplementedError(Name() + ": no cached copy to drop; the origin is local");
  }

  // Appends to `out` where the bytes a Pread of [offset, offset + n) would read are stored.
  // Views (windows, layer stacks, compressed files) map the range onto the files they read and
  // ask those in turn; a file that stores its own bytes names itself (the default). A
  // prefetch uses it to fetch the stored bytes behind a disk range without reading, and so
  // decompressing, them. Thread-safe like Pread.
  virtual void Locate(uint64_t offset, uint64_t n, std::vector<FileExtent>* out) const {
    if (offset >= Size() || n == 0) return;
    out->push_back(FileExtent{this, ByteRange{offset, std::min<uint64_t>(n, Size() - offset)}});
  }

  // Brings `ranges` (sorted, disjoint) of this file close, so that reading them later costs
  // no round trip: a remote file fetches the ones it lacks into its cache, in as few requests
  // as it can. The default does nothing: the bytes are local. Thread-safe like Pread.
  virtual absl::Status Prefetch(const std::vector<ByteRange>& ranges) const {
    (void)ranges;
    return absl::OkStatus();
  }

  // Makes a later Pread of [offset, offset + n) cheaper where this file keeps decoded bytes in
  // memory: a compressed file decompresses the blocks holding the range into its block cache
  // (reading their stored bytes, which a Prefetch should have brought close); views forward to
  // the files they read. The default does nothing. Thread-safe like Pread.
  virtual absl::Status WarmCache(uint64_t offset, uint64_t n) const {
    (void)offset;
    (void)n;
    return absl::OkStatus();
  }
};

// Reads exactly n bytes at offset, or fails with OUT_OF_RANGE naming the file, `what` (the
// structure being read, for the message) and the offending range.
absl::Status PreadExact(const RandomAccessFile& file, uint64_t offset, size_t n, char* buf,
                        absl::string_view what);

// A file written sequentially. Not thread-safe.
class WritableFile {
 public:
  virtual ~WritableFile() = default;
  virtual absl::Status Append(absl::string_view data) = 0;
  // Bytes appended so far.
  virtual uint64_t Size() const = 0;
  // Makes everything appended so far durable.
  virtual absl::Status Sync() = 0;
  // Flushes and closes; further calls fail. Destruction without Close closes silently.
  virtual absl::Status Close() = 0;
  virtual std::string Name() const = 0;
};

// A local file opened read-only (pread(2) on an owned fd).
absl::StatusOr<std::unique_ptr<RandomAccessFile>> OpenLocalFile(const std::string& path);

// A local file created (or truncated) for writing.
absl::StatusOr<std::unique_ptr<WritableFile>> CreateLocalFile(const std::string& path);

// An in-memory file over a copy of `data`, for tests and small metadata.
std::unique_ptr<RandomAccessFile> NewMemoryFile(std::string data, std::string name = "memory");

}  // namespace dadi::blockstore
