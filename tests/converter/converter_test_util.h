// Helpers for converter tests: tar layers built with libarchive's writer, trees read back from
// an Ext4Filesystem or a mounted directory in one comparable form, e2fsck, and a read-only loop
// mount that is torn down even when a test fails.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "blockstore/file/file.h"
#include "converter/block_device.h"
#include "converter/ext4_filesystem.h"

struct archive;

namespace dadi::testing {

// Metadata of one tar entry.
struct TarMeta {
  uint32_t mode = 0644;
  uint32_t uid = 0;
  uint32_t gid = 0;
  int64_t mtime = 1700000000;
  long mtime_nsec = 0;
  std::vector<std::pair<std::string, std::string>> xattrs;
};

class TarBuilder {
 public:
  enum class Compression { kNone, kGzip, kZstd };
  enum class Format { kPax, kGnu, kUstar };

  using Meta = TarMeta;
  static Meta DirMeta() {
    Meta m;
    m.mode = 0755;
    return m;
  }

  explicit TarBuilder(Format format = Format::kPax, Compression compression = Compression::kNone);
  ~TarBuilder();
  TarBuilder(const TarBuilder&) = delete;
  TarBuilder& operator=(const TarBuilder&) = delete;

  TarBuilder& File(const std::string& path, const std::string& content, const Meta& m = {});
  TarBuilder& Dir(const std::string& path, const Meta& m = DirMeta());
  TarBuilder& Symlink(const std::string& path, const std::string& target, const Meta& m = {});
  TarBuilder& Hardlink(const std::string& path, const std::string& target);
  TarBuilder& Device(const std::string& path, bool block, uint32_t major, uint32_t minor,
                     const Meta& m = {});
  TarBuilder& Fifo(const std::string& path, const Meta& m = {});
  // A sparse file of `size` bytes whose data regions are (offset, bytes); the rest are holes
  // (PAX GNU.sparse 1.0 in the pax format).
  TarBuilder& SparseFile(const std::string& path, uint64_t size,
                         const std::vector<std::pair<uint64_t, std::string>>& regions);
  // `.wh.<base>` beside path.
  TarBuilder& Whiteout(const std::string& path);
  // `<dir>/.wh..wh..opq`.
  TarBuilder& Opaque(const std::string& dir);
  // The archive bytes (compressed as asked). The builder is finished afterwards.
  std::string Finish();

 private:
  void Add(const std::string& path, unsigned type, const Meta& m, const std::string* content,
           const std::string* symlink, const std::string* hardlink, uint32_t major = 0,
           uint32_t minor = 0);
  struct archive* a_ = nullptr;
  std::string out_;
};

// One node of a tree, in a form both the ext4 API and a mounted directory produce.
struct Node {
  uint32_t mode = 0;  // with type bits
  uint32_t uid = 0, gid = 0;
  int64_t mtime_sec = 0;
  uint32_t mtime_nsec = 0;
  int64_t atime_sec = 0;
  uint32_t atime_nsec = 0;
  uint32_t nlink = 0;
  uint64_t size = 0;
  uint64_t ino = 0;
  std::string content;  // regular files: the data; symlinks: the target
  uint32_t rdev_major = 0, rdev_minor = 0;
  std::vector<std::pair<std::string, std::string>> xattrs;  // sorted
  bool operator==(const Node&) const = default;
};
using Tree = std::map<std::string, Node>;  // path relative to the root ("a/b"), no root entry

std::string Describe(const Node& n);
// Lines "path: description" of the entries that differ between two trees.
std::string TreeDiff(const Tree& a, const Tree& b);

// Reads the whole tree (lost+found excluded) through the Ext4Filesystem API.
absl::StatusOr<Tree> DumpExt4(converter::Ext4Filesystem& fs);
// Reads the tree under a mounted directory (lost+found excluded).
absl::StatusOr<Tree> DumpDir(const std::string& root);

// Writes the flat image of `stack` (a layer stack) to a new file at `path`; all-zero 1 MiB
// chunks are skipped, so they stay holes.
absl::Status ExportFlat(const blockstore::RandomAccessFile& stack, const std::string& path);

// Runs `command` through the shell with its stderr joined to its stdout, appending that output
// to *output. Returns the exit status, -1 when it did not exit (or could not be started).
int RunShell(const std::string& command, std::string* output);

// Runs `e2fsck -fn image`; OK when it exits 0, else the output in the message.
absl::Status Fsck(const std::string& image);

// A read-only loop mount of an ext4 image, detached on destruction.
class LoopMount {
 public:
  // UNAVAILABLE when this machine cannot do loop mounts (the test then skips).
  static absl::StatusOr<std::unique_ptr<LoopMount>> Mount(const std::string& image,
                                                          const std::string& dir);
  ~LoopMount();
  const std::string& dir() const { return dir_; }

 private:
  LoopMount() = default;
  std::string dir_;
  std::string loop_dev_;
  int loop_fd_ = -1;
  bool mounted_ = false;
};

// Writes an OCI image layout at `dir` holding one image of the uncompressed tars `layers`
// (bottom first), tagged "v1"; its config lists their digests as diff_ids.
void WriteOciLayout(const std::string& dir, const std::vector<std::string>& layers);

}  // namespace dadi::testing
