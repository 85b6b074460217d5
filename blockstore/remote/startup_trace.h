// A startup trace: the ranges of an image's virtual disk that a container read while it started,
// in the order of first access. It is recorded once (dadi-blockd keeps what each device served;
// `dadi trace save` writes it out), pushed next to the image's layers as a small JSON blob that
// the top layer's annotations name, and replayed by dadi-blockd on every later attach: it
// fetches those ranges in parallel the moment the device exists, so the container's first
// reads find them local instead of waiting for one registry round trip each. This is the DADI
// paper's trace-based prefetch.
//
//   {"mediaType": "application/vnd.dadi.startup-trace.v1+json",
//    "virtualSize": 68719476736,
//    "ranges": [[offset, length], ...],
//    "stored": [["sha256:<layer blob>", offset, length], ...],
//    "packs": [{"digest": "sha256:...", "size": N, "ranges": K}, ...],
//    "files": [["usr/bin/python3.11", [[offset, length], ...]], ...]}
//
// Ranges are byte ranges of the virtual disk; each lies inside virtualSize, and has a length of
// 1..kMaxStartupTraceRange. `stored` (optional; blockd adds it when it hands a trace out) names
// the bytes of the layer blobs that store those ranges, first accessed first: what a prefetch
// has to fetch. `packs` (optional; `dadi trace push` adds it) names blobs that hold exactly the
// stored ranges' bytes back to back: the first pack the first K stored ranges, the next the K
// after them, and so on. A few sequential GETs replace a multi-range GET per few dozen ranges
// (docker-registry reads 4 MiB of its file for every range), and small first packs let the
// container's first reads start before the rest has arrived. `files` (optional; blockd adds it)
// names the files of the disk's file system that hold the traced ranges, and which bytes of
// each, first accessed first: blockd reads them ahead into the page cache once the file system
// is mounted, so that the container's reads of them wait for nothing. Unknown keys are ignored
// (fields are only ever added).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "blockstore/file/file.h"

namespace dadi::blockstore {

inline constexpr absl::string_view kStartupTraceMediaType =
    "application/vnd.dadi.startup-trace.v1+json";
// Layer annotations (on the image's top layer) that name the trace blob, in the layer's
// repository. containerd hands containerd.io/snapshot/* annotations to the snapshotter.
inline constexpr char kStartupTraceDigestAnnotation[] =
    "containerd.io/snapshot/dadi/startup-trace-digest";
inline constexpr char kStartupTraceSizeAnnotation[] =
    "containerd.io/snapshot/dadi/startup-trace-size";

// Bounds of what is accepted from a registry.
inline constexpr uint64_t kMaxStartupTraceBytes = 8 << 20;
inline constexpr size_t kMaxStartupTraceRanges = 1 << 18;
inline constexpr uint64_t kMaxStartupTraceRange = 64 << 20;
// Each pack is read into memory whole (its digest is checked before any of it is used); all of
// them together hold at most kMaxStartupPackBytes.
inline constexpr uint64_t kMaxStartupPackBytes = 256 << 20;
inline constexpr size_t kMaxStartupPacks = 1024;

// A range of the disk the trace was recorded on.
using TraceRange = ByteRange;

// Bytes of one layer blob that store part of the traced ranges.
struct StoredRange {
  std::string blob;  // the layer blob's digest, "sha256:<hex>"
  ByteRange range;

  bool operator==(const StoredRange&) const = default;
};

// A blob holding the bytes of `ranges` stored ranges back to back (those after the previous
// packs' ranges).
struct StartupPackRef {
  std::string digest;
  uint64_t size = 0;  // the sum of its stored ranges' lengths
  size_t ranges = 0;

  bool operator==(const StartupPackRef&) const = default;
};

// Bytes of one file of the disk's file system that the trace covers.
struct TracedFile {
  std::string path;               // relative to the file system's root, no "." or ".."
  std::vector<ByteRange> ranges;  // byte ranges of the file, sorted

  bool operator==(const TracedFile&) const = default;
};
inline constexpr size_t kMaxTracedFilePath = 4096;

struct StartupTrace {
  uint64_t virtual_size = 0;
  std::vector<TraceRange> ranges;     // first access first
  std::vector<StoredRange> stored;    // empty: not located
  std::vector<StartupPackRef> packs;  // empty: no packs; else they cover `stored` exactly
  std::vector<TracedFile> files;      // empty: not mapped to files
};

// True for a relative path with no empty, "." or ".." component and no NUL, at most
// kMaxTracedFilePath bytes: what a trace may name.
bool IsSafeRelativePath(absl::string_view path);

// The sum of the stored ranges' lengths: the size of their pack.
uint64_t StoredBytes(absl::Span<const StoredRange> stored);

// The JSON blob. Deterministic: the same trace gives the same bytes.
std::string SerializeStartupTrace(const StartupTrace& trace);

// Parses and checks a trace blob: size, media type, every range inside virtualSize and within
// the limits above. INVALID_ARGUMENT naming what is wrong.
absl::StatusOr<StartupTrace> ParseStartupTrace(absl::string_view json);

// Records reads as a trace: each read extends the last range when it continues it, else it
// starts a new one; a range already recorded is not recorded again. Bounded: after
// kMaxStartupTraceRanges ranges, further reads are dropped. Not thread-safe.
class TraceRecorder {
 public:
  explicit TraceRecorder(uint64_t virtual_size) { trace_.virtual_size = virtual_size; }
  void Record(uint64_t offset, uint64_t length);
  const StartupTrace& trace() const { return trace_; }
  // No new range will be recorded.
  bool full() const { return trace_.ranges.size() >= kMaxStartupTraceRanges; }

 private:
  StartupTrace trace_;
  std::map<uint64_t, uint64_t> seen_;  // what is already recorded: start -> end, disjoint
};

}  // namespace dadi::blockstore
