// Applies an OCI layer tar (plain, gzip or zstd; detected from the bytes) to an ext4 file
// system with the semantics containerd's applier has over overlayfs: entries replace what is at
// their path unless both are directories, `.wh.<name>` deletes a lower entry, `.wh..wh..opq`
// empties its directory of everything this layer did not add, parent symlinks are followed but
// never out of the root, paths are cleaned lexically and confined to the root. docs/converter.md
// has the full mapping.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "blockstore/file/file.h"
#include "converter/ext4_filesystem.h"

namespace dadi::converter {

struct ApplyOptions {
  // Names the layer in error messages (a digest or a file name).
  std::string layer_name = "layer";
  // Time given to directories the tar implies but does not contain (parents created on the
  // way). Seconds since the epoch.
  int64_t default_time = 0;
  // Entries larger than this (bytes of content) are rejected before anything is written.
  uint64_t max_file_size = uint64_t{16} << 40;
  // Longest entry path or link target accepted, in bytes.
  size_t max_path_length = 16 << 10;
};

struct ApplyStats {
  uint64_t entries = 0;
  uint64_t whiteouts = 0;
  // Bytes of file content written (the tar's uncompressed payload).
  uint64_t file_bytes = 0;
  // Bytes of the tar stream after decompression (headers and padding included).
  uint64_t tar_bytes = 0;
};

// Supplies the (possibly compressed) tar stream: fills up to n bytes of buf, returns how many;
// 0 means end of stream.
using TarReader = std::function<absl::StatusOr<size_t>(char* buf, size_t n)>;

// Applies one layer. On error the file system holds part of the layer (callers discard it).
absl::StatusOr<ApplyStats> ApplyTar(Ext4Filesystem& fs, const TarReader& reader,
                                    const ApplyOptions& options);
absl::StatusOr<ApplyStats> ApplyTarFile(Ext4Filesystem& fs,
                                        const blockstore::RandomAccessFile& file,
                                        const ApplyOptions& options);
// Reads fd from its current position to the end (a pipe works). Does not close it.
absl::StatusOr<ApplyStats> ApplyTarFd(Ext4Filesystem& fs, int fd, const ApplyOptions& options);

}  // namespace dadi::converter
