// `dadi verify`: checks that a converted (overlaybd) image holds the same file tree as its
// source image. The converted image's layer blobs are opened as an LSMT stack and its ext4 read
// through Ext4Filesystem (no mount); the source's tar layers are applied with TarApplier to a
// scratch ext4; both trees are walked the same way and compared entry by entry.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "blockstore/remote/manifest.h"
#include "converter/ext4_filesystem.h"
#include "converter/image/image_store.h"

namespace dadi::converter {

// What is compared of one file.
struct TreeEntry {
  uint32_t mode = 0;  // type and permission bits
  uint32_t uid = 0, gid = 0;
  uint64_t size = 0;      // regular files and symlinks
  int64_t mtime_sec = 0;  // non-directories
  uint32_t mtime_nsec = 0;
  uint32_t nlink = 0;   // non-directories (hard links)
  std::string content;  // regular files: "sha256:..." of the data; symlinks: the target
  uint32_t rdev_major = 0, rdev_minor = 0;
  std::vector<Xattr> xattrs;  // sorted by name
  bool operator==(const TreeEntry&) const = default;
};
// Path relative to the root ("etc/passwd") → entry; lost+found at the root is left out.
using FileTree = std::map<std::string, TreeEntry>;

absl::StatusOr<FileTree> WalkTree(Ext4Filesystem& fs);

// One line per difference: "path: only in the source", "path: mode 100644 (source) != 100755
// (converted)", ... At most `limit` lines (a last line says how many more).
std::vector<std::string> CompareTrees(const FileTree& source, const FileTree& converted,
                                      size_t limit = 1000);

struct VerifyOptions {
  std::optional<blockstore::Platform> platform;  // for indexes; default: the first platform
  std::string work_dir;                          // scratch space (required)
};

struct VerifyReport {
  std::string platform;  // chosen platform ("" for a single manifest)
  int layers = 0;
  uint64_t entries = 0;  // entries of the source tree
  std::vector<std::string> differences;
};

// Compares the converted image with the source image (same platform). Errors for images that
// cannot be read; differences are reported, not errors.
absl::StatusOr<VerifyReport> VerifyImage(image::ImageSource& converted, image::ImageSource& source,
                                         const VerifyOptions& options);

}  // namespace dadi::converter
