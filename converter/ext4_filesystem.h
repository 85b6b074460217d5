// An ext4 file system built in user space with libext2fs on a BlockDevice.
//
// Operations work on inode numbers (the tar applier resolves paths itself, with containerd's
// rules); a few path helpers serve tests and tools. Everything is deterministic: no wall-clock
// time, uuid or hash seed is read; the same calls on the same device give the same bytes.
// Not thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "converter/block_device.h"

struct struct_ext2_filsys;

namespace dadi::converter {

using Ino = uint32_t;
inline constexpr Ino kRootIno = 2;

struct Ext4Options {
  // Bytes of device per inode (mkfs -i). 16384 like overlaybd's mkfs: a 64 GiB image holds 4 Mi
  // inodes; inode tables are never written until used, so a generous count costs nothing.
  uint64_t inode_ratio = 16384;
  uint32_t inode_size = 256;
  // 2^log_groups_per_flex block groups share one flex group (mkfs -G 16).
  uint32_t log_groups_per_flex = 4;
  // File system uuid and directory hash seed. Callers derive them from the image (e.g. its
  // digest) when they want them unique; the defaults are fixed so output is reproducible.
  std::array<uint8_t, 16> uuid{};
  std::array<uint8_t, 16> hash_seed{};
  std::string volume_label;
  // Seconds since the epoch written as the creation/write time of the file system and as the
  // time of objects that have none of their own (lost+found, directories made as parents).
  // 0 is not representable for libext2fs ("now"), so 0 means 1.
  uint32_t timestamp = 0;
};

struct Timespec {
  int64_t sec = 0;
  uint32_t nsec = 0;
  bool operator==(const Timespec&) const = default;
};

// What ext4 keeps of a file's metadata. mode holds the file type bits (S_IFREG, ...) and the
// permission bits including setuid/setgid/sticky.
struct Attr {
  uint32_t mode = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  Timespec atime, mtime, ctime;
  uint32_t rdev_major = 0, rdev_minor = 0;
  // Output only (GetAttr).
  uint64_t size = 0;
  uint32_t nlink = 0;
  uint64_t blocks_512 = 0;
};

struct DirEntry {
  std::string name;
  Ino ino = 0;
  uint32_t type = 0;  // S_IFMT bits of the target, from the entry's file type
};

struct Xattr {
  std::string name;  // full name, e.g. "security.capability", "user.foo"
  std::string value;
  bool operator==(const Xattr&) const = default;
};

class Ext4Filesystem;

// Streams the content of a regular file into large contiguous extents. Data must come in
// increasing offsets; gaps are holes (sparse files). Finish() sets the final size; a writer
// abandoned without Finish leaves a consistent file holding the data flushed so far.
class FileWriter {
 public:
  ~FileWriter();
  FileWriter(const FileWriter&) = delete;
  FileWriter& operator=(const FileWriter&) = delete;

  Ino ino() const { return ino_; }
  absl::Status Write(uint64_t offset, absl::string_view data);
  absl::Status Finish(uint64_t size);

 private:
  friend class Ext4Filesystem;
  FileWriter(Ext4Filesystem* fs, Ino ino);
  absl::Status FlushBuffer();
  absl::Status SetSize(uint64_t size);

  Ext4Filesystem* fs_;
  Ino ino_;
  // Buffered data covers bytes [buf_start_, buf_start_ + buf_len_) of the file; buf_start_ is
  // block aligned. Bytes before `next_` have been accepted.
  std::unique_ptr<char[]> buf_;
  uint64_t buf_start_ = 0;
  size_t buf_len_ = 0;
  uint64_t next_ = 0;
  uint64_t goal_ = ~0ULL;
  bool finished_ = false;
};

class Ext4Filesystem {
 public:
  // Makes a fresh file system over the whole device (mkfs.ext4 -b 4096 -O ^has_journal,
  // extents,64bit,dir_index,filetype,flex_bg,sparse_super,huge_file,dir_nlink,extra_isize,
  // large_file,ext_attr), with root and lost+found.
  static absl::StatusOr<std::unique_ptr<Ext4Filesystem>> Create(BlockDevice* device,
                                                                const Ext4Options& options);
  // Opens the file system on `device` read-write. `timestamp` as in Ext4Options.
  static absl::StatusOr<std::unique_ptr<Ext4Filesystem>> Open(BlockDevice* device,
                                                              uint32_t timestamp = 0);

  // Closes without error reporting if Close() was not called (logs).
  ~Ext4Filesystem();
  Ext4Filesystem(const Ext4Filesystem&) = delete;
  Ext4Filesystem& operator=(const Ext4Filesystem&) = delete;

  // Writes all metadata and data to the device and flushes it. The file system stays open.
  absl::Status Flush();
  // Flush, then close. Further calls fail.
  absl::Status Close();

  // --- lookups --------------------------------------------------------------------------
  // The inode of `name` in directory `dir`, or 0 if there is none.
  absl::StatusOr<Ino> LookupChild(Ino dir, absl::string_view name);
  // Follows the components of a '/'-separated path from the root, without following symlinks;
  // NOT_FOUND if a component is missing.
  absl::StatusOr<Ino> LookupPath(absl::string_view path);
  absl::StatusOr<Attr> GetAttr(Ino ino);
  absl::StatusOr<std::vector<DirEntry>> ReadDir(Ino dir);
  // Calls fn for each entry except . and ..; stops early when fn returns false.
  absl::Status ForEachEntry(Ino dir, const std::function<bool(const DirEntry&)>& fn);
  absl::StatusOr<std::string> ReadLink(Ino ino);
  // Reads up to n bytes at offset (short at end of file).
  absl::StatusOr<std::string> ReadFile(Ino ino, uint64_t offset, size_t n);
  absl::StatusOr<std::vector<Xattr>> GetXattrs(Ino ino);

  // --- changes (`name` is one path component, not present in `parent`) ---------------------
  absl::StatusOr<Ino> Mkdir(Ino parent, absl::string_view name, const Attr& attr);
  // Regular file: the caller streams the data through the writer.
  absl::StatusOr<std::unique_ptr<FileWriter>> CreateFile(Ino parent, absl::string_view name,
                                                         const Attr& attr);
  absl::StatusOr<Ino> Symlink(Ino parent, absl::string_view name, absl::string_view target,
                              const Attr& attr);
  // Character or block device, fifo or socket (attr.mode says which, attr.rdev_* the number).
  absl::StatusOr<Ino> Mknod(Ino parent, absl::string_view name, const Attr& attr);
  // A new name for an existing non-directory inode.
  absl::Status Link(Ino parent, absl::string_view name, Ino target);
  // Removes `name` from `parent`; a directory is removed with everything below it. Inodes whose
  // last link goes are freed with their blocks and xattr blocks. NOT_FOUND if missing.
  absl::Status Remove(Ino parent, absl::string_view name);
  // Removes, in one pass over `dir`, every entry for which `remove` returns true (directories
  // with everything below them); returns the removed entries. `remove` must not change the
  // file system.
  absl::StatusOr<std::vector<DirEntry>> RemoveChildren(
      Ino dir, const std::function<bool(const DirEntry&)>& remove);
  // Sets permission bits (mode & 07777), owner and times; the file type is kept.
  absl::Status SetAttr(Ino ino, const Attr& attr);
  // Adds or replaces the given extended attributes.
  absl::Status SetXattrs(Ino ino, const std::vector<Xattr>& xattrs);

  // mkdir -p from the root (no symlink following); missing directories get `attr`.
  absl::StatusOr<Ino> MkdirAll(absl::string_view path, const Attr& attr);

  uint32_t block_size() const;
  uint64_t free_blocks() const;
  uint32_t default_time() const { return timestamp_; }
  // The libext2fs handle, for code in this directory that needs more.
  struct_ext2_filsys* raw() { return fs_; }

 private:
  friend class FileWriter;
  Ext4Filesystem(BlockDevice* device, struct_ext2_filsys* fs, uint32_t timestamp)
      : device_(device), fs_(fs), timestamp_(timestamp) {}

  absl::Status Error(long code, absl::string_view what) const;
  absl::Status AddEntry(Ino parent, absl::string_view name, Ino ino, uint32_t mode);
  // Appends the entry to the directory's last block (or a new one). 0, or an ext2fs error;
  // EXT2_ET_UNIMPLEMENTED when the directory needs ext2fs_link (htree, checksums).
  long AppendEntry(Ino parent, absl::string_view name, Ino ino, int file_type);
  void IndexAdd(Ino dir, absl::string_view name, Ino ino);
  void IndexRemove(Ino dir, absl::string_view name);
  void IndexDrop(Ino dir);
  absl::StatusOr<Ino> NewInode(Ino parent, uint32_t mode);
  absl::Status DropLink(Ino ino);
  absl::Status DropParentLink(Ino parent);
  // Frees a directory that is no longer linked, with everything below it.
  absl::Status FreeTree(Ino top);
  absl::Status FreeInode(Ino ino);
  // Data blocks [lblk, lblk + n) of ino get allocated and `data` (n blocks) written there.
  absl::Status WriteBlocks(Ino ino, uint64_t lblk, const char* data, uint64_t n, uint64_t* goal);

  BlockDevice* device_;
  struct_ext2_filsys* fs_;
  uint32_t timestamp_;
  // Name -> inode of large directories seen in this session: libext2fs looks names up by
  // scanning every block, which made a tar with thousands of files in one directory quadratic.
  // Kept in step by every change made through this class; bounded by kMaxIndexedEntries.
  absl::flat_hash_map<Ino, absl::flat_hash_map<std::string, Ino>> dir_index_;
  size_t indexed_entries_ = 0;
};

// S_IF* of a libext2fs mode (same values as Linux).
inline bool IsDirMode(uint32_t mode) { return (mode & 0170000) == 0040000; }

}  // namespace dadi::converter
