#include "blockstore/blockd/trace_files.h"

#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <linux/openat2.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <system_error>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "blockstore/device/errno_code.h"
#include "blockstore/file/unique_fd.h"

namespace dadi::blockstore::blockd {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kReadPiece = 128 << 10;

absl::Status Errno(int err, absl::string_view what) {
  return absl::Status(DeviceErrnoCode(err), absl::StrCat(what, ": ", std::strerror(err)));
}

// The traced ranges merged into disjoint intervals, each with the position in the trace of the
// first range it holds.
struct Interval {
  uint64_t start = 0;
  uint64_t end = 0;
  size_t first = 0;
};

std::vector<Interval> MergeRanges(const std::vector<ByteRange>& ranges) {
  std::vector<Interval> in;
  in.reserve(ranges.size());
  for (size_t i = 0; i < ranges.size(); ++i) {
    in.push_back(Interval{ranges[i].offset, ranges[i].offset + ranges[i].length, i});
  }
  std::sort(in.begin(), in.end(),
            [](const Interval& a, const Interval& b) { return a.start < b.start; });
  std::vector<Interval> out;
  for (const Interval& r : in) {
    if (!out.empty() && r.start <= out.back().end) {
      out.back().end = std::max(out.back().end, r.end);
      out.back().first = std::min(out.back().first, r.first);
    } else {
      out.push_back(r);
    }
  }
  return out;
}

// The extents of the open file `fd` (logical, physical, length), all of them.
absl::Status ForEachExtent(int fd, const std::function<void(const fiemap_extent&)>& fn) {
  constexpr unsigned kBatch = 64;
  std::vector<char> buf(sizeof(fiemap) + kBatch * sizeof(fiemap_extent));
  uint64_t start = 0;
  for (;;) {
    std::memset(buf.data(), 0, buf.size());
    auto* map = reinterpret_cast<fiemap*>(buf.data());
    map->fm_start = start;
    map->fm_length = FIEMAP_MAX_OFFSET - start;
    map->fm_flags = FIEMAP_FLAG_SYNC;
    map->fm_extent_count = kBatch;
    if (::ioctl(fd, FS_IOC_FIEMAP, map) != 0) {
      return Errno(errno, "FIEMAP");
    }
    if (map->fm_mapped_extents == 0) return absl::OkStatus();
    for (unsigned i = 0; i < map->fm_mapped_extents; ++i) {
      const fiemap_extent& e = map->fm_extents[i];
      // Only extents with a known place on the device: not inline, delayed or encoded data.
      constexpr uint32_t kNotOnDevice = FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_DELALLOC |
                                        FIEMAP_EXTENT_ENCODED | FIEMAP_EXTENT_DATA_INLINE |
                                        FIEMAP_EXTENT_NOT_ALIGNED | FIEMAP_EXTENT_UNWRITTEN;
      if ((e.fe_flags & kNotOnDevice) == 0) fn(e);
      if (e.fe_flags & FIEMAP_EXTENT_LAST) return absl::OkStatus();
      start = e.fe_logical + e.fe_length;
    }
  }
}

// Opens `path` under the directory `root`: no symlinks, no "..", no other mount.
int OpenBeneath(int root, const std::string& path, uint64_t flags) {
  open_how how{};
  how.flags = flags;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
  return static_cast<int>(::syscall(SYS_openat2, root, path.c_str(), &how, sizeof(how)));
}

}  // namespace

absl::StatusOr<std::vector<TracedFile>> MapRangesToFiles(const std::string& mount_point,
                                                         const std::vector<ByteRange>& ranges,
                                                         absl::Duration budget) {
  const absl::Time deadline = absl::Now() + budget;
  const std::vector<Interval> traced = MergeRanges(ranges);
  struct Found {
    size_t first = std::numeric_limits<size_t>::max();
    TracedFile file;
  };
  std::vector<Found> found;
  size_t total = 0;  // file ranges found
  std::error_code ec;
  struct stat root_st;
  if (::stat(mount_point.c_str(), &root_st) != 0) {
    return Errno(errno, absl::StrCat("stat ", mount_point));
  }
  auto it = fs::recursive_directory_iterator(mount_point,
                                             fs::directory_options::skip_permission_denied, ec);
  if (ec) return absl::InternalError(absl::StrCat(mount_point, ": ", ec.message()));
  for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) return absl::InternalError(absl::StrCat(mount_point, ": ", ec.message()));
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat("mapping the trace to files of ", mount_point,
                                                      " took over ", absl::FormatDuration(budget)));
    }
    const fs::directory_entry& entry = *it;
    if (entry.is_directory(ec) && !entry.is_symlink(ec)) {
      struct stat st;
      // Stay on this file system: a mount inside it is not on the device.
      if (::lstat(entry.path().c_str(), &st) == 0 && st.st_dev != root_st.st_dev) {
        it.disable_recursion_pending();
      }
      continue;
    }
    if (!entry.is_regular_file(ec) || entry.is_symlink(ec)) continue;
    UniqueFd fd(::open(entry.path().c_str(), O_RDONLY | O_NOFOLLOW | O_NOATIME | O_CLOEXEC));
    if (!fd.valid()) continue;
    Found f;
    f.file.path = fs::relative(entry.path(), mount_point, ec).string();
    if (ec || !IsSafeRelativePath(f.file.path)) continue;
    absl::Status s = ForEachExtent(fd.get(), [&](const fiemap_extent& e) {
      const uint64_t p0 = e.fe_physical, p1 = e.fe_physical + e.fe_length;
      auto t = std::upper_bound(traced.begin(), traced.end(), p0,
                                [](uint64_t p, const Interval& iv) { return p < iv.start; });
      if (t != traced.begin() && std::prev(t)->end > p0) --t;
      for (; t != traced.end() && t->start < p1; ++t) {
        const uint64_t a = std::max(p0, t->start), b = std::min(p1, t->end);
        if (a >= b) continue;
        f.first = std::min(f.first, t->first);
        // In pieces a trace may hold, and no more of them than it may hold in all.
        for (uint64_t at = a; at < b && total < kMaxStartupTraceRanges;
             at += kMaxStartupTraceRange) {
          f.file.ranges.push_back(
              ByteRange{e.fe_logical + (at - p0), std::min(kMaxStartupTraceRange, b - at)});
          ++total;
        }
      }
    });
    if (!s.ok() || f.file.ranges.empty()) continue;
    std::sort(f.file.ranges.begin(), f.file.ranges.end(),
              [](const ByteRange& a, const ByteRange& b) { return a.offset < b.offset; });
    found.push_back(std::move(f));
  }
  std::stable_sort(found.begin(), found.end(),
                   [](const Found& a, const Found& b) { return a.first < b.first; });
  std::vector<TracedFile> files;
  files.reserve(found.size());
  for (Found& f : found) files.push_back(std::move(f.file));
  return files;
}

FilesReadAhead ReadFilesAhead(const std::string& mount_point, const std::vector<TracedFile>& files,
                              uint64_t max_bytes, const std::atomic<bool>& stop) {
  FilesReadAhead done;
  UniqueFd root(::open(mount_point.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root.valid()) return done;
  // The files to read (regular files only), each with its size; at most `max_bytes` of them.
  struct Open {
    const TracedFile* file;
    UniqueFd fd;
    uint64_t size;
  };
  std::vector<Open> open;
  uint64_t bytes = 0;
  for (const TracedFile& f : files) {
    if (stop || bytes >= max_bytes) break;
    if (!IsSafeRelativePath(f.path)) continue;
    // Look before opening: opening a device node or a FIFO does things; a regular file of a
    // read-only file system does not change between the two calls.
    struct stat st;
    UniqueFd path(OpenBeneath(root.get(), f.path, O_PATH | O_CLOEXEC));
    if (!path.valid() || ::fstat(path.get(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    UniqueFd fd(OpenBeneath(root.get(), f.path, O_RDONLY | O_NOATIME | O_CLOEXEC));
    if (!fd.valid()) continue;
    // No readahead of the file beyond what is asked: the rest of it is not traced, and reading
    // it would fetch it.
    ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_RANDOM);
    for (const ByteRange& r : f.ranges) bytes += r.length;
    open.push_back(Open{&f, std::move(fd), static_cast<uint64_t>(st.st_size)});
  }
  // Each range of `o` inside the file, in pieces no device limits.
  auto for_each_piece = [](const Open& o, const std::function<void(uint64_t, uint64_t)>& fn) {
    for (const ByteRange& r : o.file->ranges) {
      if (r.offset >= o.size) break;
      const uint64_t n = std::min<uint64_t>(r.length, o.size - r.offset);
      for (uint64_t at = 0; at < n; at += kReadPiece) {
        fn(r.offset + at, std::min<uint64_t>(kReadPiece, n - at));
      }
    }
  };
  // readahead(2) first: it only starts the reads, so the device has them all in flight at
  // once. But it is best effort (now and then it left a quarter of a 2 MiB file out), so the
  // bytes are then read for real: pages already there cost a copy, the others a read.
  for (const Open& o : open) {
    if (stop) break;
    for_each_piece(o, [&](uint64_t off, uint64_t n) {
      ::readahead(o.fd.get(), static_cast<off64_t>(off), n);
    });
  }
  std::vector<char> buf(kReadPiece);
  for (const Open& o : open) {
    if (stop) break;
    for_each_piece(o, [&](uint64_t off, uint64_t n) {
      // An error is this file's only: the container will see it itself.
      if (::pread(o.fd.get(), buf.data(), n, static_cast<off_t>(off)) > 0) done.bytes += n;
    });
    ++done.files;
  }
  return done;
}

}  // namespace dadi::blockstore::blockd
