#include "converter/ext4_filesystem.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "converter/ext2fs_headers.h"
#include "converter/ext4_io_manager.h"

namespace dadi::converter {
namespace {

constexpr uint32_t kBlockSize = 4096;
// FileWriter buffers this much data before allocating and writing it in one run.
constexpr size_t kWriterBufferBytes = 4 << 20;
constexpr size_t kMaxNameLen = 255;
// Directories larger than this get an in-memory name index on first lookup.
constexpr uint64_t kIndexDirBytes = 3 * kBlockSize;
constexpr size_t kMaxIndexedEntries = 4 << 20;

void InitErrorTable() {
  // com_err's table registration is process-wide and not thread-safe: do it once.
  static std::once_flag once;
  std::call_once(once, [] { initialize_ext2_error_table(); });
}

absl::StatusCode CodeFor(errcode_t code) {
  switch (code) {
    case EXT2_ET_BLOCK_ALLOC_FAIL:
    case EXT2_ET_INODE_ALLOC_FAIL:
    case EXT2_ET_EA_NO_SPACE:
    case EXT2_ET_DIR_NO_SPACE:
    case EXT2_ET_TOOSMALL:
      return absl::StatusCode::kResourceExhausted;
    case EXT2_ET_FILE_NOT_FOUND:
      return absl::StatusCode::kNotFound;
    case EXT2_ET_DIR_EXISTS:
    case EXT2_ET_FILE_EXISTS:
      return absl::StatusCode::kAlreadyExists;
    case EXT2_ET_SHORT_READ:
    case EXT2_ET_SHORT_WRITE:
      return absl::StatusCode::kUnavailable;
    case EXT2_ET_NO_DIRECTORY:
    case EXT2_ET_INVALID_ARGUMENT:
    case EXT2_ET_EA_KEY_NOT_FOUND:
      return absl::StatusCode::kFailedPrecondition;
    default:
      return absl::StatusCode::kInternal;
  }
}

// Inode buffer of the file system's full on-disk inode size, so that reading and writing an
// inode keeps its in-inode extended attributes and a new inode starts from zeros.
class InodeBuf {
 public:
  explicit InodeBuf(ext2_filsys fs) : size_(EXT2_INODE_SIZE(fs->super)) {
    std::memset(buf_, 0, sizeof(buf_));
  }
  ext2_inode_large* large() { return reinterpret_cast<ext2_inode_large*>(buf_); }
  ext2_inode* base() { return reinterpret_cast<ext2_inode*>(buf_); }
  int size() const { return size_; }

 private:
  alignas(16) char buf_[1024];
  int size_;
};

uint32_t EncodeExtra(const Timespec& t) {
  // ext4: the low two bits extend the 32-bit seconds (epoch bits), the rest are nanoseconds.
  uint32_t epoch = static_cast<uint32_t>(((t.sec - static_cast<int32_t>(t.sec)) >> 32) & 3);
  return epoch | (std::min<uint32_t>(t.nsec, 999999999) << 2);
}

Timespec DecodeTime(uint32_t lo, uint32_t extra, bool has_extra) {
  Timespec t;
  t.sec = static_cast<int32_t>(lo);
  if (has_extra) {
    t.sec += static_cast<int64_t>(extra & 3) << 32;
    t.nsec = extra >> 2;
  }
  return t;
}

bool HasExtraField(ext2_inode_large* in, size_t field_end) {
  return static_cast<size_t>(EXT2_GOOD_OLD_INODE_SIZE + in->i_extra_isize) >= field_end;
}

void SetTimes(ext2_inode_large* in, const Attr& a) {
  in->i_atime = static_cast<uint32_t>(a.atime.sec);
  in->i_mtime = static_cast<uint32_t>(a.mtime.sec);
  in->i_ctime = static_cast<uint32_t>(a.ctime.sec);
  if (HasExtraField(in, offsetof(ext2_inode_large, i_crtime_extra) + 4)) {
    in->i_atime_extra = EncodeExtra(a.atime);
    in->i_mtime_extra = EncodeExtra(a.mtime);
    in->i_ctime_extra = EncodeExtra(a.ctime);
    in->i_crtime = in->i_ctime;
    in->i_crtime_extra = in->i_ctime_extra;
  }
}

void SetOwner(ext2_inode_large* in, const Attr& a) {
  in->i_uid = static_cast<uint16_t>(a.uid & 0xffff);
  ext2fs_set_i_uid_high(*in, static_cast<uint16_t>(a.uid >> 16));
  in->i_gid = static_cast<uint16_t>(a.gid & 0xffff);
  ext2fs_set_i_gid_high(*in, static_cast<uint16_t>(a.gid >> 16));
}

int FileTypeOf(uint32_t mode) {
  switch (mode & S_IFMT) {
    case S_IFREG:
      return EXT2_FT_REG_FILE;
    case S_IFDIR:
      return EXT2_FT_DIR;
    case S_IFCHR:
      return EXT2_FT_CHRDEV;
    case S_IFBLK:
      return EXT2_FT_BLKDEV;
    case S_IFIFO:
      return EXT2_FT_FIFO;
    case S_IFSOCK:
      return EXT2_FT_SOCK;
    case S_IFLNK:
      return EXT2_FT_SYMLINK;
    default:
      return EXT2_FT_UNKNOWN;
  }
}

uint32_t ModeOfFileType(int ft) {
  switch (ft) {
    case EXT2_FT_REG_FILE:
      return S_IFREG;
    case EXT2_FT_DIR:
      return S_IFDIR;
    case EXT2_FT_CHRDEV:
      return S_IFCHR;
    case EXT2_FT_BLKDEV:
      return S_IFBLK;
    case EXT2_FT_FIFO:
      return S_IFIFO;
    case EXT2_FT_SOCK:
      return S_IFSOCK;
    case EXT2_FT_SYMLINK:
      return S_IFLNK;
    default:
      return 0;
  }
}

absl::Status CheckName(absl::string_view name) {
  if (name.empty() || name == "." || name == ".." || name.size() > kMaxNameLen ||
      name.find('/') != absl::string_view::npos || name.find('\0') != absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid file name \"", absl::CHexEscape(name.substr(0, 300)), "\""));
  }
  return absl::OkStatus();
}

void InitExtentHeader(ext2_inode_large* in) {
  std::memset(in->i_block, 0, sizeof(in->i_block));
  auto* eh = reinterpret_cast<ext3_extent_header*>(in->i_block);
  eh->eh_magic = ext2fs_cpu_to_le16(EXT3_EXT_MAGIC);
  eh->eh_entries = 0;
  eh->eh_max =
      ext2fs_cpu_to_le16((sizeof(in->i_block) - sizeof(ext3_extent_header)) / sizeof(ext3_extent));
  eh->eh_depth = 0;
  in->i_flags |= EXT4_EXTENTS_FL;
}

}  // namespace

// --- Ext4Filesystem -------------------------------------------------------------------------

absl::Status Ext4Filesystem::Error(long code, absl::string_view what) const {
  std::string msg = absl::StrCat(what, ": ", error_message(code));
  if (fs_ != nullptr && (code == EXT2_ET_SHORT_READ || code == EXT2_ET_SHORT_WRITE)) {
    std::string io = Ext4IoChannelLastError(fs_->io);
    if (!io.empty()) absl::StrAppend(&msg, " (", io, ")");
  }
  return absl::Status(CodeFor(code), msg);
}

namespace {
absl::Status OpenError(errcode_t code, absl::string_view what, BlockDevice* device) {
  return absl::Status(CodeFor(code),
                      absl::StrCat(what, " on ", device->Name(), ": ", error_message(code)));
}
}  // namespace

absl::StatusOr<std::unique_ptr<Ext4Filesystem>> Ext4Filesystem::Create(BlockDevice* device,
                                                                       const Ext4Options& options) {
  InitErrorTable();
  const uint64_t blocks = device->Size() / kBlockSize;
  if (blocks < 1024) {
    return absl::InvalidArgumentError(absl::StrCat("device ", device->Name(), " of ",
                                                   device->Size(),
                                                   " bytes is too small for ext4 (4 MiB min)"));
  }
  if (options.inode_ratio < kBlockSize || options.inode_size < 256 ||
      (options.inode_size & (options.inode_size - 1)) != 0 || options.inode_size > 1024) {
    return absl::InvalidArgumentError("bad inode_ratio or inode_size in ext4 options");
  }
  struct ext2_super_block param;
  std::memset(&param, 0, sizeof(param));
  param.s_rev_level = EXT2_DYNAMIC_REV;
  ext2fs_set_feature_xattr(&param);
  ext2fs_set_feature_dir_index(&param);
  ext2fs_set_feature_filetype(&param);
  ext2fs_set_feature_extents(&param);
  ext2fs_set_feature_64bit(&param);
  ext2fs_set_feature_flex_bg(&param);
  ext2fs_set_feature_sparse_super(&param);
  ext2fs_set_feature_large_file(&param);
  ext2fs_set_feature_huge_file(&param);
  ext2fs_set_feature_dir_nlink(&param);
  ext2fs_set_feature_extra_isize(&param);
  param.s_log_block_size = param.s_log_cluster_size = 2;  // 1024 << 2
  param.s_desc_size = EXT2_MIN_DESC_SIZE_64BIT;
  param.s_log_groups_per_flex = static_cast<uint8_t>(options.log_groups_per_flex);
  param.s_inode_size = static_cast<uint16_t>(options.inode_size);
  ext2fs_blocks_count_set(&param, blocks);
  uint64_t inodes = blocks * kBlockSize / options.inode_ratio;
  param.s_inodes_count = static_cast<uint32_t>(std::min<uint64_t>(inodes, 0xfff00000u));

  const std::string name = Ext4IoChannelName(device);
  ext2_filsys fs = nullptr;
  errcode_t err =
      ext2fs_initialize(name.c_str(), EXT2_FLAG_64BITS, &param, BlockDeviceIoManager(), &fs);
  if (err) return OpenError(err, "initializing ext4 superblock", device);
  const uint32_t ts = std::max<uint32_t>(options.timestamp, 1);
  std::unique_ptr<Ext4Filesystem> result(new Ext4Filesystem(device, fs, ts));
  fs->now = ts;
  ext2_super_block* sb = fs->super;
  sb->s_mkfs_time = sb->s_lastcheck = ts;
  sb->s_wtime = ts;
  std::memcpy(sb->s_uuid, options.uuid.data(), 16);
  std::memcpy(sb->s_hash_seed, options.hash_seed.data(), 16);
  sb->s_def_hash_version = EXT2_HASH_HALF_MD4;
  // The hash signedness is fixed, not taken from this machine's char, for reproducible output.
  sb->s_flags &= ~(EXT2_FLAGS_UNSIGNED_HASH | EXT2_FLAGS_SIGNED_HASH);
  sb->s_flags |= EXT2_FLAGS_SIGNED_HASH;
  sb->s_max_mnt_count = static_cast<uint16_t>(-1);
  sb->s_kbytes_written = 0;
  std::strncpy(reinterpret_cast<char*>(sb->s_volume_name), options.volume_label.c_str(),
               sizeof(sb->s_volume_name));
  ext2fs_mark_super_dirty(fs);

  if ((err = ext2fs_allocate_tables(fs))) return result->Error(err, "allocating group tables");
  fs->umask = 022;
  if ((err = ext2fs_mkdir(fs, EXT2_ROOT_INO, EXT2_ROOT_INO, nullptr))) {
    return result->Error(err, "creating the root directory");
  }
  // Reserved inodes (1 and 3..first_ino-1) as mkfs marks them.
  ext2fs_inode_alloc_stats2(fs, EXT2_BAD_INO, +1, 0);
  for (ext2_ino_t i = EXT2_ROOT_INO + 1; i < EXT2_FIRST_INODE(fs->super); ++i) {
    ext2fs_inode_alloc_stats2(fs, i, +1, 0);
  }
  ext2fs_mark_ib_dirty(fs);
  if ((err = ext2fs_update_bb_inode(fs, nullptr))) {
    return result->Error(err, "writing the bad blocks inode");
  }
  // lost+found, mode 0700 and 16 KiB like mkfs, so e2fsck has room without allocating.
  fs->umask = 077;
  err = ext2fs_mkdir(fs, EXT2_ROOT_INO, 0, "lost+found");
  fs->umask = 0;
  if (err) return result->Error(err, "creating lost+found");
  ext2_ino_t lpf = 0;
  if ((err = ext2fs_lookup(fs, EXT2_ROOT_INO, "lost+found", 10, nullptr, &lpf))) {
    return result->Error(err, "looking up lost+found");
  }
  for (uint32_t size = kBlockSize; size < 16 * 1024; size += kBlockSize) {
    if ((err = ext2fs_expand_dir(fs, lpf))) return result->Error(err, "expanding lost+found");
  }
  return result;
}

absl::StatusOr<std::unique_ptr<Ext4Filesystem>> Ext4Filesystem::Open(BlockDevice* device,
                                                                     uint32_t timestamp) {
  InitErrorTable();
  const std::string name = Ext4IoChannelName(device);
  ext2_filsys fs = nullptr;
  errcode_t err = ext2fs_open2(name.c_str(), nullptr, EXT2_FLAG_RW | EXT2_FLAG_64BITS, 0, 0,
                               BlockDeviceIoManager(), &fs);
  if (err) return OpenError(err, "opening ext4", device);
  const uint32_t ts = std::max<uint32_t>(timestamp, 1);
  std::unique_ptr<Ext4Filesystem> result(new Ext4Filesystem(device, fs, ts));
  fs->now = ts;
  fs->umask = 0;
  // Only the primary superblock and descriptors are rewritten (as the kernel does): the backups
  // would otherwise change with every free count and land in every layer.
  fs->flags |= EXT2_FLAG_MASTER_SB_ONLY;
  if (fs->blocksize != kBlockSize) {
    return absl::FailedPreconditionError(
        absl::StrCat("ext4 on ", device->Name(), " has block size ", fs->blocksize, ", want 4096"));
  }
  if (ext2fs_has_feature_journal_needs_recovery(fs->super)) {
    return absl::FailedPreconditionError(
        absl::StrCat("ext4 on ", device->Name(), " has a journal that needs recovery"));
  }
  if ((err = ext2fs_read_bitmaps(fs))) return result->Error(err, "reading ext4 bitmaps");
  return result;
}

Ext4Filesystem::~Ext4Filesystem() {
  if (fs_ == nullptr) return;
  errcode_t err = ext2fs_close_free(&fs_);
  if (err) {
    std::fprintf(stderr, "dadi: closing ext4 on %s: %s\n", device_->Name().c_str(),
                 error_message(err));
  }
}

absl::Status Ext4Filesystem::Flush() {
  if (fs_ == nullptr) return absl::FailedPreconditionError("ext4 file system is closed");
  errcode_t err = ext2fs_write_bitmaps(fs_);
  if (!err) err = ext2fs_flush(fs_);
  if (err) return Error(err, absl::StrCat("flushing ext4 on ", device_->Name()));
  return absl::OkStatus();
}

absl::Status Ext4Filesystem::Close() {
  if (fs_ == nullptr) return absl::FailedPreconditionError("ext4 file system is closed");
  if (absl::Status s = Flush(); !s.ok()) return s;
  errcode_t err = ext2fs_close_free(&fs_);
  fs_ = nullptr;
  if (err) {
    return absl::Status(
        CodeFor(err), absl::StrCat("closing ext4 on ", device_->Name(), ": ", error_message(err)));
  }
  return absl::OkStatus();
}

uint32_t Ext4Filesystem::block_size() const { return fs_->blocksize; }
uint64_t Ext4Filesystem::free_blocks() const { return ext2fs_free_blocks_count(fs_->super); }

absl::StatusOr<Ino> Ext4Filesystem::LookupChild(Ino dir, absl::string_view name) {
  if (auto it = dir_index_.find(dir); it != dir_index_.end()) {
    auto n = it->second.find(name);
    return n == it->second.end() ? 0 : n->second;
  }
  struct ext2_inode inode;
  errcode_t err = ext2fs_read_inode(fs_, dir, &inode);
  if (err) return Error(err, absl::StrCat("reading inode ", dir));
  if (LINUX_S_ISDIR(inode.i_mode) && EXT2_I_SIZE(&inode) > kIndexDirBytes) {
    absl::flat_hash_map<std::string, Ino> index;
    absl::Status s = ForEachEntry(dir, [&](const DirEntry& e) {
      index.emplace(e.name, e.ino);
      return true;
    });
    if (!s.ok()) return s;
    if (indexed_entries_ + index.size() > kMaxIndexedEntries) {
      dir_index_.clear();
      indexed_entries_ = 0;
    }
    indexed_entries_ += index.size();
    auto n = index.find(name);
    Ino found = n == index.end() ? 0 : n->second;
    dir_index_.emplace(dir, std::move(index));
    return found;
  }
  ext2_ino_t ino = 0;
  err = ext2fs_lookup(fs_, dir, name.data(), static_cast<int>(name.size()), nullptr, &ino);
  if (err == EXT2_ET_FILE_NOT_FOUND) return 0;
  if (err) return Error(err, absl::StrCat("looking up \"", name, "\" in inode ", dir));
  return ino;
}

void Ext4Filesystem::IndexAdd(Ino dir, absl::string_view name, Ino ino) {
  auto it = dir_index_.find(dir);
  if (it == dir_index_.end()) return;
  if (it->second.insert_or_assign(std::string(name), ino).second) ++indexed_entries_;
}

void Ext4Filesystem::IndexRemove(Ino dir, absl::string_view name) {
  auto it = dir_index_.find(dir);
  if (it == dir_index_.end()) return;
  auto n = it->second.find(name);
  if (n == it->second.end()) return;
  it->second.erase(n);
  --indexed_entries_;
}

void Ext4Filesystem::IndexDrop(Ino dir) {
  auto it = dir_index_.find(dir);
  if (it == dir_index_.end()) return;
  indexed_entries_ -= it->second.size();
  dir_index_.erase(it);
}

absl::StatusOr<Ino> Ext4Filesystem::LookupPath(absl::string_view path) {
  Ino cur = kRootIno;
  for (absl::string_view part : absl::StrSplit(path, '/', absl::SkipEmpty())) {
    if (part == ".") continue;
    absl::StatusOr<Ino> next = LookupChild(cur, part);
    if (!next.ok()) return next.status();
    if (*next == 0) return absl::NotFoundError(absl::StrCat("\"", path, "\" not found"));
    cur = *next;
  }
  return cur;
}

absl::StatusOr<Attr> Ext4Filesystem::GetAttr(Ino ino) {
  InodeBuf ib(fs_);
  errcode_t err = ext2fs_read_inode_full(fs_, ino, ib.base(), ib.size());
  if (err) return Error(err, absl::StrCat("reading inode ", ino));
  ext2_inode_large* in = ib.large();
  Attr a;
  a.mode = in->i_mode;
  a.uid = inode_uid(*in);
  a.gid = inode_gid(*in);
  bool extra = EXT2_INODE_SIZE(fs_->super) > EXT2_GOOD_OLD_INODE_SIZE &&
               HasExtraField(in, offsetof(ext2_inode_large, i_atime_extra) + 4);
  a.atime = DecodeTime(in->i_atime, in->i_atime_extra, extra);
  a.mtime = DecodeTime(in->i_mtime, in->i_mtime_extra, extra);
  a.ctime = DecodeTime(in->i_ctime, in->i_ctime_extra, extra);
  a.size = EXT2_I_SIZE(in);
  a.nlink = in->i_links_count;
  a.blocks_512 = ext2fs_get_stat_i_blocks(fs_, ib.base());
  if (S_ISCHR(a.mode) || S_ISBLK(a.mode)) {
    if (in->i_block[0] != 0) {
      a.rdev_major = (in->i_block[0] >> 8) & 0xff;
      a.rdev_minor = in->i_block[0] & 0xff;
    } else {
      uint32_t d = in->i_block[1];
      a.rdev_major = (d & 0xfff00) >> 8;
      a.rdev_minor = (d & 0xff) | ((d >> 12) & 0xfff00);
    }
  }
  return a;
}

absl::Status Ext4Filesystem::ForEachEntry(Ino dir, const std::function<bool(const DirEntry&)>& fn) {
  struct Ctx {
    const std::function<bool(const DirEntry&)>* fn;
  } ctx{&fn};
  auto cb = [](ext2_ino_t, int, struct ext2_dir_entry* dirent, int, int, char*, void* priv) -> int {
    auto* c = static_cast<Ctx*>(priv);
    int len = ext2fs_dirent_name_len(dirent);
    absl::string_view name(dirent->name, static_cast<size_t>(len));
    if (dirent->inode == 0 || name == "." || name == "..") return 0;
    DirEntry e{std::string(name), dirent->inode, ModeOfFileType(ext2fs_dirent_file_type(dirent))};
    return (*c->fn)(e) ? 0 : DIRENT_ABORT;
  };
  errcode_t err = ext2fs_dir_iterate2(fs_, dir, 0, nullptr, cb, &ctx);
  if (err) return Error(err, absl::StrCat("reading directory inode ", dir));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<DirEntry>> Ext4Filesystem::ReadDir(Ino dir) {
  std::vector<DirEntry> out;
  absl::Status s = ForEachEntry(dir, [&](const DirEntry& e) {
    out.push_back(e);
    return true;
  });
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<std::string> Ext4Filesystem::ReadLink(Ino ino) {
  InodeBuf ib(fs_);
  errcode_t err = ext2fs_read_inode_full(fs_, ino, ib.base(), ib.size());
  if (err) return Error(err, absl::StrCat("reading inode ", ino));
  if (!S_ISLNK(ib.large()->i_mode)) {
    return absl::InvalidArgumentError(absl::StrCat("inode ", ino, " is not a symlink"));
  }
  uint64_t size = EXT2_I_SIZE(ib.large());
  if (ext2fs_is_fast_symlink(ib.base())) {
    return std::string(reinterpret_cast<const char*>(ib.large()->i_block), size);
  }
  return ReadFile(ino, 0, size);
}

absl::StatusOr<std::string> Ext4Filesystem::ReadFile(Ino ino, uint64_t offset, size_t n) {
  ext2_file_t file = nullptr;
  errcode_t err = ext2fs_file_open(fs_, ino, 0, &file);
  if (err) return Error(err, absl::StrCat("opening inode ", ino));
  std::string out;
  __u64 size = 0;
  ext2fs_file_get_lsize(file, &size);
  if (offset < size) {
    out.resize(std::min<uint64_t>(n, size - offset));
    err = ext2fs_file_llseek(file, offset, EXT2_SEEK_SET, nullptr);
    size_t done = 0;
    while (!err && done < out.size()) {
      unsigned int got = 0;
      unsigned int want = static_cast<unsigned int>(std::min<size_t>(out.size() - done, 1 << 30));
      err = ext2fs_file_read(file, out.data() + done, want, &got);
      if (!err && got == 0) break;
      done += got;
    }
    out.resize(done);
  }
  errcode_t cerr = ext2fs_file_close(file);
  if (!err) err = cerr;
  if (err) return Error(err, absl::StrCat("reading inode ", ino));
  return out;
}

absl::StatusOr<std::vector<Xattr>> Ext4Filesystem::GetXattrs(Ino ino) {
  struct ext2_xattr_handle* h = nullptr;
  errcode_t err = ext2fs_xattrs_open(fs_, ino, &h);
  if (err) return Error(err, absl::StrCat("opening xattrs of inode ", ino));
  std::vector<Xattr> out;
  err = ext2fs_xattrs_read(h);
  if (!err) {
    err = ext2fs_xattrs_iterate(
        h,
        [](char* name, char* value, size_t len, void* data) -> int {
          static_cast<std::vector<Xattr>*>(data)->push_back(
              Xattr{std::string(name), std::string(value, len)});
          return 0;
        },
        &out);
  }
  errcode_t cerr = ext2fs_xattrs_close(&h);
  if (!err) err = cerr;
  if (err) return Error(err, absl::StrCat("reading xattrs of inode ", ino));
  return out;
}

absl::Status Ext4Filesystem::SetXattrs(Ino ino, const std::vector<Xattr>& xattrs) {
  if (xattrs.empty()) return absl::OkStatus();
  struct ext2_xattr_handle* h = nullptr;
  errcode_t err = ext2fs_xattrs_open(fs_, ino, &h);
  if (err) return Error(err, absl::StrCat("opening xattrs of inode ", ino));
  err = ext2fs_xattrs_read(h);
  std::string failed;
  for (const Xattr& x : xattrs) {
    if (err) break;
    err = ext2fs_xattr_set(h, x.name.c_str(), x.value.data(), x.value.size());
    if (err) failed = x.name;
  }
  errcode_t cerr = ext2fs_xattrs_close(&h);
  if (!err) err = cerr;
  if (err) {
    return Error(err, absl::StrCat("setting xattr ", failed.empty() ? "" : "\"" + failed + "\" ",
                                   "on inode ", ino));
  }
  return absl::OkStatus();
}

long Ext4Filesystem::AppendEntry(Ino parent, absl::string_view name, Ino ino, int file_type) {
  if (ext2fs_has_feature_metadata_csum(fs_->super) || ext2fs_has_feature_inline_data(fs_->super)) {
    return EXT2_ET_UNIMPLEMENTED;
  }
  const unsigned needed = EXT2_DIR_REC_LEN(name.size());
  for (int attempt = 0; attempt < 2; ++attempt) {
    struct ext2_inode inode;
    errcode_t err = ext2fs_read_inode(fs_, parent, &inode);
    if (err) return err;
    if (!LINUX_S_ISDIR(inode.i_mode)) return EXT2_ET_NO_DIRECTORY;
    if (inode.i_flags & (EXT2_INDEX_FL | EXT4_INLINE_DATA_FL)) return EXT2_ET_UNIMPLEMENTED;
    const uint64_t nblocks = EXT2_I_SIZE(&inode) / fs_->blocksize;
    if (nblocks == 0) return EXT2_ET_UNIMPLEMENTED;
    blk64_t pblk = 0;
    err = ext2fs_bmap2(fs_, parent, &inode, nullptr, 0, nblocks - 1, nullptr, &pblk);
    if (err) return err;
    if (pblk == 0) return EXT2_ET_UNIMPLEMENTED;
    std::unique_ptr<char[]> buf(new char[fs_->blocksize]);
    err = ext2fs_read_dir_block4(fs_, pblk, buf.get(), 0, parent);
    if (err) return err;
    unsigned offset = 0;
    while (offset + 8 <= fs_->blocksize) {
      auto* d = reinterpret_cast<struct ext2_dir_entry*>(buf.get() + offset);
      unsigned rec_len = 0;
      err = ext2fs_get_rec_len(fs_, d, &rec_len);
      if (err) return err;
      if (rec_len < 8 || offset + rec_len > fs_->blocksize) return EXT2_ET_DIR_CORRUPTED;
      const unsigned used = d->inode != 0 ? EXT2_DIR_REC_LEN(ext2fs_dirent_name_len(d)) : 0;
      if (rec_len >= used + needed) {
        struct ext2_dir_entry* target = d;
        if (used != 0) {
          err = ext2fs_set_rec_len(fs_, used, d);
          if (err) return err;
          target = reinterpret_cast<struct ext2_dir_entry*>(buf.get() + offset + used);
        }
        err = ext2fs_set_rec_len(fs_, rec_len - used, target);
        if (err) return err;
        target->inode = ino;
        ext2fs_dirent_set_name_len(target, static_cast<int>(name.size()));
        ext2fs_dirent_set_file_type(target, file_type);
        std::memcpy(target->name, name.data(), name.size());
        return ext2fs_write_dir_block4(fs_, pblk, buf.get(), 0, parent);
      }
      offset += rec_len;
    }
    if (attempt == 0) {
      err = ext2fs_expand_dir(fs_, parent);
      if (err) return err;
    }
  }
  return EXT2_ET_DIR_NO_SPACE;
}

absl::Status Ext4Filesystem::AddEntry(Ino parent, absl::string_view name, Ino ino, uint32_t mode) {
  errcode_t err = AppendEntry(parent, name, ino, FileTypeOf(mode));
  if (err == EXT2_ET_UNIMPLEMENTED) {
    std::string n(name);
    err = ext2fs_link(fs_, parent, n.c_str(), ino, FileTypeOf(mode));
    if (err == EXT2_ET_DIR_NO_SPACE) {
      err = ext2fs_expand_dir(fs_, parent);
      if (!err) err = ext2fs_link(fs_, parent, n.c_str(), ino, FileTypeOf(mode));
    }
  }
  if (err) return Error(err, absl::StrCat("adding \"", name, "\" to directory inode ", parent));
  IndexAdd(parent, name, ino);
  return absl::OkStatus();
}

absl::StatusOr<Ino> Ext4Filesystem::NewInode(Ino parent, uint32_t mode) {
  ext2_ino_t ino = 0;
  errcode_t err = ext2fs_new_inode(fs_, parent, static_cast<int>(mode), nullptr, &ino);
  if (err) return Error(err, "allocating an inode");
  return ino;
}

absl::StatusOr<Ino> Ext4Filesystem::Mkdir(Ino parent, absl::string_view name, const Attr& attr) {
  if (absl::Status s = CheckName(name); !s.ok()) return s;
  absl::StatusOr<Ino> ino = NewInode(parent, S_IFDIR | 0755);
  if (!ino.ok()) return ino.status();
  // Without a name, ext2fs_mkdir makes the directory and counts the parent's new link but
  // leaves the entry to us (AddEntry appends without scanning the parent).
  errcode_t err = ext2fs_mkdir(fs_, parent, *ino, nullptr);
  if (err) return Error(err, absl::StrCat("creating directory \"", name, "\""));
  if (absl::Status s = AddEntry(parent, name, *ino, S_IFDIR); !s.ok()) {
    (void)FreeInode(*ino);
    (void)DropParentLink(parent);
    return s;
  }
  Attr a = attr;
  a.mode = S_IFDIR | (attr.mode & 07777);
  if (absl::Status s = SetAttr(*ino, a); !s.ok()) return s;
  return *ino;
}

absl::StatusOr<std::unique_ptr<FileWriter>> Ext4Filesystem::CreateFile(Ino parent,
                                                                       absl::string_view name,
                                                                       const Attr& attr) {
  if (absl::Status s = CheckName(name); !s.ok()) return s;
  const uint32_t mode = S_IFREG | (attr.mode & 07777);
  absl::StatusOr<Ino> ino = NewInode(parent, mode);
  if (!ino.ok()) return ino.status();
  InodeBuf ib(fs_);
  ext2_inode_large* in = ib.large();
  in->i_mode = static_cast<uint16_t>(mode);
  in->i_links_count = 1;
  in->i_extra_isize = static_cast<uint16_t>(std::min<int>(
      sizeof(ext2_inode_large) - EXT2_GOOD_OLD_INODE_SIZE, ib.size() - EXT2_GOOD_OLD_INODE_SIZE));
  SetOwner(in, attr);
  SetTimes(in, attr);
  InitExtentHeader(in);
  errcode_t err = ext2fs_write_inode_full(fs_, *ino, ib.base(), ib.size());
  if (err) return Error(err, absl::StrCat("writing inode of \"", name, "\""));
  ext2fs_inode_alloc_stats2(fs_, *ino, +1, 0);
  if (absl::Status s = AddEntry(parent, name, *ino, mode); !s.ok()) {
    (void)FreeInode(*ino);
    return s;
  }
  return std::unique_ptr<FileWriter>(new FileWriter(this, *ino));
}

absl::StatusOr<Ino> Ext4Filesystem::Symlink(Ino parent, absl::string_view name,
                                            absl::string_view target, const Attr& attr) {
  if (absl::Status s = CheckName(name); !s.ok()) return s;
  if (target.empty() || target.size() >= fs_->blocksize ||
      target.find('\0') != absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat("symlink \"", name, "\": target of ",
                                                   target.size(),
                                                   " bytes is empty, too long or has NUL"));
  }
  absl::StatusOr<Ino> ino = NewInode(parent, S_IFLNK | 0777);
  if (!ino.ok()) return ino.status();
  std::string t(target);
  errcode_t err = ext2fs_symlink(fs_, parent, *ino, nullptr, t.c_str());
  if (err) return Error(err, absl::StrCat("creating symlink \"", name, "\""));
  if (absl::Status s = AddEntry(parent, name, *ino, S_IFLNK); !s.ok()) {
    (void)FreeInode(*ino);
    return s;
  }
  Attr a = attr;
  a.mode = S_IFLNK | 0777;
  if (absl::Status s = SetAttr(*ino, a); !s.ok()) return s;
  return *ino;
}

absl::StatusOr<Ino> Ext4Filesystem::Mknod(Ino parent, absl::string_view name, const Attr& attr) {
  if (absl::Status s = CheckName(name); !s.ok()) return s;
  const uint32_t type = attr.mode & S_IFMT;
  if (type != S_IFCHR && type != S_IFBLK && type != S_IFIFO && type != S_IFSOCK) {
    return absl::InvalidArgumentError(
        absl::StrCat("mknod \"", name, "\": mode ", attr.mode, " is not a device, fifo or socket"));
  }
  const uint32_t mode = type | (attr.mode & 07777);
  absl::StatusOr<Ino> ino = NewInode(parent, mode);
  if (!ino.ok()) return ino.status();
  InodeBuf ib(fs_);
  ext2_inode_large* in = ib.large();
  in->i_mode = static_cast<uint16_t>(mode);
  in->i_links_count = 1;
  in->i_extra_isize = static_cast<uint16_t>(std::min<int>(
      sizeof(ext2_inode_large) - EXT2_GOOD_OLD_INODE_SIZE, ib.size() - EXT2_GOOD_OLD_INODE_SIZE));
  SetOwner(in, attr);
  SetTimes(in, attr);
  if (type == S_IFCHR || type == S_IFBLK) {
    const uint32_t major = attr.rdev_major, minor = attr.rdev_minor;
    if (major < 256 && minor < 256) {
      in->i_block[0] = major << 8 | minor;
    } else {
      in->i_block[1] = (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & ~0xffu) << 12);
    }
  }
  errcode_t err = ext2fs_write_inode_full(fs_, *ino, ib.base(), ib.size());
  if (err) return Error(err, absl::StrCat("writing inode of \"", name, "\""));
  ext2fs_inode_alloc_stats2(fs_, *ino, +1, 0);
  if (absl::Status s = AddEntry(parent, name, *ino, mode); !s.ok()) {
    (void)FreeInode(*ino);
    return s;
  }
  return *ino;
}

absl::Status Ext4Filesystem::Link(Ino parent, absl::string_view name, Ino target) {
  if (absl::Status s = CheckName(name); !s.ok()) return s;
  InodeBuf ib(fs_);
  errcode_t err = ext2fs_read_inode_full(fs_, target, ib.base(), ib.size());
  if (err) return Error(err, absl::StrCat("reading inode ", target));
  ext2_inode_large* in = ib.large();
  if (S_ISDIR(in->i_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat("hard link \"", name, "\": target inode ", target, " is a directory"));
  }
  if (in->i_links_count >= EXT2_LINK_MAX) {
    return absl::ResourceExhaustedError(
        absl::StrCat("hard link \"", name, "\": target inode ", target, " has too many links"));
  }
  if (absl::Status s = AddEntry(parent, name, target, in->i_mode); !s.ok()) return s;
  in->i_links_count++;
  err = ext2fs_write_inode_full(fs_, target, ib.base(), ib.size());
  if (err) return Error(err, absl::StrCat("writing inode ", target));
  return absl::OkStatus();
}

absl::Status Ext4Filesystem::SetAttr(Ino ino, const Attr& attr) {
  InodeBuf ib(fs_);
  errcode_t err = ext2fs_read_inode_full(fs_, ino, ib.base(), ib.size());
  if (err) return Error(err, absl::StrCat("reading inode ", ino));
  ext2_inode_large* in = ib.large();
  in->i_mode = static_cast<uint16_t>((in->i_mode & S_IFMT) | (attr.mode & 07777));
  SetOwner(in, attr);
  if (ib.size() > EXT2_GOOD_OLD_INODE_SIZE && in->i_extra_isize == 0) {
    in->i_extra_isize = static_cast<uint16_t>(std::min<int>(
        sizeof(ext2_inode_large) - EXT2_GOOD_OLD_INODE_SIZE, ib.size() - EXT2_GOOD_OLD_INODE_SIZE));
  }
  SetTimes(in, attr);
  err = ext2fs_write_inode_full(fs_, ino, ib.base(), ib.size());
  if (err) return Error(err, absl::StrCat("writing inode ", ino));
  return absl::OkStatus();
}

absl::Status Ext4Filesystem::FreeInode(Ino ino) {
  IndexDrop(ino);  // the number may come back as another directory
  InodeBuf ib(fs_);
  errcode_t err = ext2fs_read_inode_full(fs_, ino, ib.base(), ib.size());
  if (err) return Error(err, absl::StrCat("reading inode ", ino));
  const bool is_dir = S_ISDIR(ib.large()->i_mode);
  if (ext2fs_inode_has_valid_blocks2(fs_, ib.base())) {
    err = ext2fs_punch(fs_, ino, ib.base(), nullptr, 0, ~0ULL);
    if (err) return Error(err, absl::StrCat("freeing blocks of inode ", ino));
    err = ext2fs_read_inode_full(fs_, ino, ib.base(), ib.size());
    if (err) return Error(err, absl::StrCat("reading inode ", ino));
  }
  if (ext2fs_file_acl_block(fs_, ib.base()) != 0) {
    err = ext2fs_free_ext_attr(fs_, ino, ib.large());
    if (err) return Error(err, absl::StrCat("freeing xattr block of inode ", ino));
    err = ext2fs_read_inode_full(fs_, ino, ib.base(), ib.size());
    if (err) return Error(err, absl::StrCat("reading inode ", ino));
  }
  ext2_inode_large* in = ib.large();
  in->i_links_count = 0;
  in->i_dtime = timestamp_;
  in->i_size = 0;
  in->i_size_high = 0;
  err = ext2fs_write_inode_full(fs_, ino, ib.base(), ib.size());
  if (err) return Error(err, absl::StrCat("writing inode ", ino));
  ext2fs_inode_alloc_stats2(fs_, ino, -1, is_dir ? 1 : 0);
  return absl::OkStatus();
}

absl::Status Ext4Filesystem::DropLink(Ino ino) {
  InodeBuf ib(fs_);
  errcode_t err = ext2fs_read_inode_full(fs_, ino, ib.base(), ib.size());
  if (err) return Error(err, absl::StrCat("reading inode ", ino));
  if (ib.large()->i_links_count > 1) {
    ib.large()->i_links_count--;
    err = ext2fs_write_inode_full(fs_, ino, ib.base(), ib.size());
    if (err) return Error(err, absl::StrCat("writing inode ", ino));
    return absl::OkStatus();
  }
  return FreeInode(ino);
}

absl::Status Ext4Filesystem::Remove(Ino parent, absl::string_view name) {
  absl::StatusOr<Ino> ino = LookupChild(parent, name);
  if (!ino.ok()) return ino.status();
  if (*ino == 0) return absl::NotFoundError(absl::StrCat("\"", name, "\" not found"));
  absl::StatusOr<Attr> attr = GetAttr(*ino);
  if (!attr.ok()) return attr.status();
  std::string n(name);
  errcode_t err = ext2fs_unlink(fs_, parent, n.c_str(), *ino, 0);
  if (err) return Error(err, absl::StrCat("removing \"", name, "\" from inode ", parent));
  IndexRemove(parent, name);
  if (!IsDirMode(attr->mode)) return DropLink(*ino);

  if (absl::Status s = FreeTree(*ino); !s.ok()) return s;
  return DropParentLink(parent);
}

absl::Status Ext4Filesystem::FreeTree(Ino top) {
  // Visit directories with an explicit stack (no recursion limit on depth), drop the links of
  // everything else, then free the directories. Their entries need not be unlinked one by
  // one: the directory blocks go with them.
  std::vector<Ino> pending{top};
  std::vector<Ino> dirs;
  while (!pending.empty()) {
    Ino d = pending.back();
    pending.pop_back();
    dirs.push_back(d);
    absl::StatusOr<std::vector<DirEntry>> entries = ReadDir(d);
    if (!entries.ok()) return entries.status();
    for (const DirEntry& e : *entries) {
      if (IsDirMode(e.type)) {
        pending.push_back(e.ino);
      } else if (absl::Status s = DropLink(e.ino); !s.ok()) {
        return s;
      }
    }
  }
  for (Ino d : dirs) {
    if (absl::Status s = FreeInode(d); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<DirEntry>> Ext4Filesystem::RemoveChildren(
    Ino dir, const std::function<bool(const DirEntry&)>& remove) {
  // One pass over the directory blocks, unlinking as ext2fs_unlink does (a removed entry's
  // space joins the previous entry of its block; the first entry of a block is marked free),
  // instead of one scan of the whole directory per removed name.
  struct Ctx {
    Ext4Filesystem* self;
    const std::function<bool(const DirEntry&)>* remove;
    std::vector<DirEntry> removed;
    struct ext2_dir_entry* prev = nullptr;
    errcode_t err = 0;
  } ctx{this, &remove, {}, nullptr, 0};
  auto cb = [](ext2_ino_t, int, struct ext2_dir_entry* dirent, int offset, int, char*,
               void* priv) -> int {
    auto* c = static_cast<Ctx*>(priv);
    if (offset == 0) c->prev = nullptr;
    struct ext2_dir_entry* prev = c->prev;
    c->prev = dirent;
    if (dirent->inode == 0) return 0;
    int len = ext2fs_dirent_name_len(dirent);
    absl::string_view name(dirent->name, static_cast<size_t>(len));
    if (name == "." || name == "..") return 0;
    DirEntry e{std::string(name), dirent->inode, ModeOfFileType(ext2fs_dirent_file_type(dirent))};
    if (!(*c->remove)(e)) return 0;
    if (prev != nullptr) {
      unsigned prev_len = 0, len_here = 0;
      c->err = ext2fs_get_rec_len(c->self->fs_, prev, &prev_len);
      if (!c->err) c->err = ext2fs_get_rec_len(c->self->fs_, dirent, &len_here);
      if (!c->err) c->err = ext2fs_set_rec_len(c->self->fs_, prev_len + len_here, prev);
      if (c->err) return DIRENT_ABORT;
      c->prev = prev;  // the merged entry is the previous one for what follows
    } else {
      dirent->inode = 0;
    }
    c->removed.push_back(std::move(e));
    return DIRENT_CHANGED;
  };
  errcode_t err = ext2fs_dir_iterate2(fs_, dir, DIRENT_FLAG_INCLUDE_EMPTY, nullptr, cb, &ctx);
  if (!err) err = ctx.err;
  if (err) return Error(err, absl::StrCat("removing entries of directory inode ", dir));
  for (const DirEntry& e : ctx.removed) {
    IndexRemove(dir, e.name);
    if (IsDirMode(e.type)) {
      if (absl::Status s = FreeTree(e.ino); !s.ok()) return s;
      if (absl::Status s = DropParentLink(dir); !s.ok()) return s;
    } else if (absl::Status s = DropLink(e.ino); !s.ok()) {
      return s;
    }
  }
  return std::move(ctx.removed);
}

absl::Status Ext4Filesystem::DropParentLink(Ino parent) {
  // The parent loses the ".." link of a removed directory.
  InodeBuf pb(fs_);
  errcode_t err = ext2fs_read_inode_full(fs_, parent, pb.base(), pb.size());
  if (err) return Error(err, absl::StrCat("reading inode ", parent));
  // 1 means "too many to count" (dir_nlink); it stays so.
  if (pb.large()->i_links_count > 2) {
    pb.large()->i_links_count--;
    err = ext2fs_write_inode_full(fs_, parent, pb.base(), pb.size());
    if (err) return Error(err, absl::StrCat("writing inode ", parent));
  }
  return absl::OkStatus();
}

absl::StatusOr<Ino> Ext4Filesystem::MkdirAll(absl::string_view path, const Attr& attr) {
  Ino cur = kRootIno;
  for (absl::string_view part : absl::StrSplit(path, '/', absl::SkipEmpty())) {
    if (part == ".") continue;
    absl::StatusOr<Ino> next = LookupChild(cur, part);
    if (!next.ok()) return next.status();
    if (*next == 0) {
      next = Mkdir(cur, part, attr);
      if (!next.ok()) return next.status();
    } else {
      absl::StatusOr<Attr> a = GetAttr(*next);
      if (!a.ok()) return a.status();
      if (!IsDirMode(a->mode)) {
        return absl::FailedPreconditionError(
            absl::StrCat("mkdir -p \"", path, "\": \"", part, "\" is not a directory"));
      }
    }
    cur = *next;
  }
  return cur;
}

absl::Status Ext4Filesystem::WriteBlocks(Ino ino, uint64_t lblk, const char* data, uint64_t n,
                                         uint64_t* goal) {
  // ext2fs_fallocate leaks blocks when it runs out of space midway (libext2fs 1.47): refuse
  // before calling it unless the data and a worst-case extent tree surely fit.
  const uint64_t worst = n + n / 340 + 4;
  if (worst > ext2fs_free_blocks_count(fs_->super)) {
    return absl::ResourceExhaustedError(
        absl::StrCat("no space for ", n, " more blocks of inode ", ino, " (",
                     ext2fs_free_blocks_count(fs_->super), " blocks free)"));
  }
  errcode_t err = ext2fs_fallocate(fs_, EXT2_FALLOCATE_FORCE_INIT, ino, nullptr, *goal, lblk, n);
  if (err) {
    return Error(err, absl::StrCat("allocating ", n, " blocks at block ", lblk, " of inode ", ino));
  }
  ext2_extent_handle_t handle = nullptr;
  err = ext2fs_extent_open(fs_, ino, &handle);
  if (err) return Error(err, absl::StrCat("opening extents of inode ", ino));
  uint64_t cur = lblk;
  while (!err && cur < lblk + n) {
    struct ext2fs_extent e;
    err = ext2fs_extent_goto(handle, cur);
    if (!err) err = ext2fs_extent_get(handle, EXT2_EXTENT_CURRENT, &e);
    if (err) break;
    if (cur < e.e_lblk || cur >= e.e_lblk + e.e_len) {
      err = EXT2_ET_EXTENT_NOT_FOUND;
      break;
    }
    uint64_t run = std::min<uint64_t>(e.e_lblk + e.e_len - cur, lblk + n - cur);
    err = io_channel_write_blk64(fs_->io, e.e_pblk + (cur - e.e_lblk), static_cast<int>(run),
                                 data + (cur - lblk) * fs_->blocksize);
    *goal = e.e_pblk + (cur - e.e_lblk) + run;
    cur += run;
  }
  ext2fs_extent_free(handle);
  if (err) return Error(err, absl::StrCat("writing data of inode ", ino));
  return absl::OkStatus();
}

// --- FileWriter -----------------------------------------------------------------------------

FileWriter::FileWriter(Ext4Filesystem* fs, Ino ino)
    : fs_(fs), ino_(ino), buf_(new char[kWriterBufferBytes]) {}

FileWriter::~FileWriter() = default;

absl::Status FileWriter::FlushBuffer() {
  if (buf_len_ == 0) return absl::OkStatus();
  const uint64_t bs = kBlockSize;
  const uint64_t nblocks = (buf_len_ + bs - 1) / bs;
  std::memset(buf_.get() + buf_len_, 0, nblocks * bs - buf_len_);
  absl::Status s = fs_->WriteBlocks(ino_, buf_start_ / bs, buf_.get(), nblocks, &goal_);
  const uint64_t end = buf_start_ + buf_len_;
  buf_start_ += nblocks * bs;
  buf_len_ = 0;
  if (!s.ok()) return s;
  // The size covers the data so far, so the file system is consistent (e2fsck-clean) even if
  // the writer is abandoned before Finish.
  return SetSize(end);
}

absl::Status FileWriter::SetSize(uint64_t size) {
  ext2_filsys fs = fs_->fs_;
  InodeBuf ib(fs);
  errcode_t err = ext2fs_read_inode_full(fs, ino_, ib.base(), ib.size());
  if (!err) err = ext2fs_inode_size_set(fs, ib.base(), size);
  if (!err) err = ext2fs_write_inode_full(fs, ino_, ib.base(), ib.size());
  if (err) return fs_->Error(err, absl::StrCat("setting size of inode ", ino_));
  return absl::OkStatus();
}

absl::Status FileWriter::Write(uint64_t offset, absl::string_view data) {
  if (finished_) return absl::FailedPreconditionError("write after Finish");
  if (offset < next_) {
    return absl::InvalidArgumentError(absl::StrCat("data of inode ", ino_, " at offset ", offset,
                                                   " goes backwards (next is ", next_, ")"));
  }
  if (data.empty()) return absl::OkStatus();
  const uint64_t bs = kBlockSize;
  if (buf_len_ > 0 && offset > buf_start_ + buf_len_) {
    const uint64_t end = buf_start_ + buf_len_;
    // A gap inside the buffered last block is zero-filled; past it, the gap is a hole.
    if ((end + bs - 1) / bs * bs > offset) {
      std::memset(buf_.get() + buf_len_, 0, offset - end);
      buf_len_ = offset - buf_start_;
    } else if (absl::Status s = FlushBuffer(); !s.ok()) {
      return s;
    }
  }
  if (buf_len_ == 0) {
    buf_start_ = offset / bs * bs;
    buf_len_ = offset - buf_start_;
    std::memset(buf_.get(), 0, buf_len_);
  }
  while (!data.empty()) {
    size_t n = std::min(data.size(), kWriterBufferBytes - buf_len_);
    std::memcpy(buf_.get() + buf_len_, data.data(), n);
    buf_len_ += n;
    data.remove_prefix(n);
    if (buf_len_ == kWriterBufferBytes) {
      if (absl::Status s = FlushBuffer(); !s.ok()) return s;
    }
  }
  next_ = buf_start_ + buf_len_;
  return absl::OkStatus();
}

absl::Status FileWriter::Finish(uint64_t size) {
  if (finished_) return absl::FailedPreconditionError("Finish called twice");
  if (size < next_) {
    return absl::InvalidArgumentError(
        absl::StrCat("inode ", ino_, ": size ", size, " is below the data written (", next_, ")"));
  }
  finished_ = true;
  if (absl::Status s = FlushBuffer(); !s.ok()) return s;
  return SetSize(size);
}

}  // namespace dadi::converter
