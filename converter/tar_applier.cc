#include "converter/tar_applier.h"

#include <archive.h>
#include <archive_entry.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace dadi::converter {
namespace {

constexpr absl::string_view kWhiteoutPrefix = ".wh.";
constexpr absl::string_view kOpaqueMarker = ".wh..wh..opq";
// Symlinks followed while resolving one path (containerd's RootPath allows 255).
constexpr int kMaxSymlinks = 255;
constexpr size_t kReadBufferBytes = 1 << 20;
constexpr size_t kParentCacheMax = 4096;

std::string Quote(absl::string_view s) {
  if (s.size() > 512) return absl::StrCat("\"", absl::CHexEscape(s.substr(0, 512)), "...\"");
  return absl::StrCat("\"", absl::CHexEscape(s), "\"");
}

// Splits a path into components, cleaned lexically as Go's filepath.Clean on a path joined to
// "/": empty and "." parts vanish, ".." removes the previous part and never climbs above the
// root.
std::vector<std::string> CleanComponents(absl::string_view path) {
  std::vector<std::string> out;
  for (absl::string_view part : absl::StrSplit(path, '/', absl::SkipEmpty())) {
    if (part == ".") continue;
    if (part == "..") {
      if (!out.empty()) out.pop_back();
      continue;
    }
    out.emplace_back(part);
  }
  return out;
}

Timespec MakeTime(int64_t sec, long nsec) {
  Timespec t;
  t.sec = sec;
  t.nsec = nsec < 0 || nsec > 999999999 ? 0 : static_cast<uint32_t>(nsec);
  return t;
}

bool Later(const Timespec& a, const Timespec& b) {
  return a.sec > b.sec || (a.sec == b.sec && a.nsec > b.nsec);
}

struct ArchiveDeleter {
  void operator()(struct archive* a) const { archive_read_free(a); }
};

// Decompresses the layer on a thread of its own (libarchive's filters under its raw format),
// so inflating overlaps applying to ext4: gzip decoding is about a third of the CPU time of a
// conversion. Chunks of ~1 MiB, at most kMaxChunks queued; the source reader is called from
// that thread only. The destructor stops and joins it, also when the applier gives up early.
class Decompressor {
 public:
  explicit Decompressor(const TarReader& source) : source_(source), thread_([this] { Run(); }) {}
  Decompressor(const Decompressor&) = delete;
  Decompressor& operator=(const Decompressor&) = delete;
  ~Decompressor() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  // Replaces *chunk with the next piece of the plain tar stream; empty at its end.
  absl::Status Next(std::string* chunk) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return !queue_.empty() || done_; });
    if (queue_.empty()) {
      chunk->clear();
      return status_;
    }
    *chunk = std::move(queue_.front());
    queue_.pop_front();
    cv_.notify_all();
    return absl::OkStatus();
  }

 private:
  static constexpr size_t kMaxChunks = 4;

  struct Source {
    const TarReader* reader;
    std::unique_ptr<char[]> buf;
    absl::Status status;
  };

  static la_ssize_t SourceRead(struct archive* a, void* data, const void** out) {
    auto* src = static_cast<Source*>(data);
    absl::StatusOr<size_t> n = (*src->reader)(src->buf.get(), kReadBufferBytes);
    if (!n.ok()) {
      src->status = n.status();
      archive_set_error(a, EIO, "%s", std::string(n.status().message()).c_str());
      return -1;
    }
    *out = src->buf.get();
    return static_cast<la_ssize_t>(*n);
  }

  // Queues a chunk; false when the consumer is gone.
  bool Push(std::string chunk) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return queue_.size() < kMaxChunks || stop_; });
    if (stop_) return false;
    queue_.push_back(std::move(chunk));
    cv_.notify_all();
    return true;
  }

  void Finish(absl::Status status) {
    std::lock_guard<std::mutex> lock(mu_);
    status_ = std::move(status);
    done_ = true;
    cv_.notify_all();
  }

  void Run() { Finish(Decompress()); }

  absl::Status Decompress() {
    Source src{&source_, std::unique_ptr<char[]>(new char[kReadBufferBytes]), {}};
    std::unique_ptr<struct archive, ArchiveDeleter> a(archive_read_new());
    if (!a) return absl::ResourceExhaustedError("archive_read_new failed");
    archive_read_support_filter_gzip(a.get());
    archive_read_support_filter_zstd(a.get());
    archive_read_support_filter_none(a.get());
    archive_read_support_format_raw(a.get());
    // The raw format refuses an empty stream (a zero-byte layer, or an empty one compressed);
    // the empty format takes it and has no entry.
    archive_read_support_format_empty(a.get());
    auto failed = [&](int r) {
      if (!src.status.ok()) return src.status;
      const char* msg = archive_error_string(a.get());
      return absl::InvalidArgumentError(msg != nullptr ? std::string(msg)
                                                       : absl::StrCat("libarchive error ", r));
    };
    if (int r = archive_read_open2(a.get(), &src, nullptr, SourceRead, nullptr, nullptr);
        r != ARCHIVE_OK) {
      return failed(r);
    }
    struct archive_entry* e = nullptr;
    if (int r = archive_read_next_header(a.get(), &e); r == ARCHIVE_EOF) {
      return absl::OkStatus();
    } else if (r != ARCHIVE_OK) {
      return failed(r);
    }
    std::string pending;
    pending.reserve(kReadBufferBytes);
    while (true) {
      const void* block = nullptr;
      size_t size = 0;
      la_int64_t offset = 0;
      int r = archive_read_data_block(a.get(), &block, &size, &offset);
      if (r == ARCHIVE_EOF) break;
      if (r < ARCHIVE_WARN) return failed(r);
      pending.append(static_cast<const char*>(block), size);
      if (pending.size() >= kReadBufferBytes) {
        if (!Push(std::move(pending))) return absl::CancelledError("reader stopped");
        pending = std::string();
        pending.reserve(kReadBufferBytes);
      }
    }
    if (!pending.empty() && !Push(std::move(pending))) {
      return absl::CancelledError("reader stopped");
    }
    return absl::OkStatus();
  }

  const TarReader& source_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::string> queue_;
  bool done_ = false;
  bool stop_ = false;
  absl::Status status_;
  std::thread thread_;  // last: starts once the members above exist
};

struct ReaderContext {
  Decompressor* decompressor;
  std::string chunk;  // what libarchive reads from until the next callback
  absl::Status status;
};

la_ssize_t ReadCallback(struct archive* a, void* data, const void** out) {
  auto* ctx = static_cast<ReaderContext*>(data);
  if (absl::Status s = ctx->decompressor->Next(&ctx->chunk); !s.ok()) {
    ctx->status = s;
    archive_set_error(a, EIO, "%s", std::string(s.message()).c_str());
    return -1;
  }
  *out = ctx->chunk.data();
  return static_cast<la_ssize_t>(ctx->chunk.size());
}

class Applier {
 public:
  Applier(Ext4Filesystem& fs, const ApplyOptions& options) : fs_(fs), options_(options) {}

  absl::StatusOr<ApplyStats> Run(const TarReader& reader);

 private:
  struct Resolved {
    Ino ino = 0;
    std::string path;  // resolved path from the root, "" for the root, no leading '/'
  };

  absl::Status Fail(absl::string_view entry, const absl::Status& s) const {
    return absl::Status(s.code(), absl::StrCat("layer ", options_.layer_name, ": entry ",
                                               Quote(entry), ": ", s.message()));
  }
  absl::Status ApplyEntry(struct archive* a, struct archive_entry* e, absl::string_view name);
  // Resolves directory components from the root following symlinks (confined to the root) and,
  // with `create`, making missing directories.
  absl::StatusOr<Resolved> ResolveDir(const std::vector<std::string>& comps, size_t n, bool create);
  absl::Status RemoveIfExists(Ino parent, const std::string& name);
  absl::Status Opaque(const Resolved& dir);
  absl::StatusOr<Attr> AttrOf(struct archive_entry* e, uint32_t type);
  absl::StatusOr<std::vector<Xattr>> XattrsOf(struct archive_entry* e);
  absl::Status WriteData(struct archive* a, struct archive_entry* e, FileWriter& w);
  Attr DefaultDirAttr() const {
    Attr a;
    a.mode = S_IFDIR | 0755;
    a.atime = a.mtime = a.ctime = MakeTime(options_.default_time, 0);
    return a;
  }
  void RemovedSomething() { parent_cache_.clear(); }

  Ext4Filesystem& fs_;
  const ApplyOptions& options_;
  ApplyStats stats_;
  // Resolved paths of everything this layer put in place (containerd's unpackedPaths): an
  // opaque marker keeps them.
  absl::flat_hash_set<std::string> unpacked_;
  // Raw parent path of recent entries -> resolved directory. Tars list a directory's entries
  // together, so this saves walking from the root per entry. Cleared on any removal.
  absl::flat_hash_map<std::string, Resolved> parent_cache_;
};

absl::StatusOr<ApplyStats> Applier::Run(const TarReader& reader) {
  // Declared before the archive, so they outlive it.
  Decompressor decompressor(reader);
  ReaderContext ctx{&decompressor, {}, {}};
  std::unique_ptr<struct archive, ArchiveDeleter> a(archive_read_new());
  if (!a) return absl::ResourceExhaustedError("archive_read_new failed");
  archive_read_support_filter_none(a.get());
  archive_read_support_format_tar(a.get());
  archive_read_support_format_gnutar(a.get());
  archive_read_support_format_empty(a.get());
  if (archive_read_open2(a.get(), &ctx, nullptr, ReadCallback, nullptr, nullptr) != ARCHIVE_OK) {
    if (!ctx.status.ok()) {
      return absl::Status(ctx.status.code(), absl::StrCat("layer ", options_.layer_name,
                                                          ": reading: ", ctx.status.message()));
    }
    return absl::InvalidArgumentError(absl::StrCat(
        "layer ", options_.layer_name, ": not a tar stream: ", archive_error_string(a.get())));
  }
  std::string last = "(start of archive)";
  while (true) {
    struct archive_entry* e = nullptr;
    int r = archive_read_next_header(a.get(), &e);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) {
      const char* msg = archive_error_string(a.get());
      absl::Status s = ctx.status.ok()
                           ? absl::InvalidArgumentError(msg ? msg : "unknown libarchive error")
                           : ctx.status;
      return absl::Status(
          s.code(), absl::StrCat("layer ", options_.layer_name, ": bad tar header after entry ",
                                 Quote(last), ": ", s.message()));
    }
    const char* path = archive_entry_pathname(e);
    if (path == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "layer ", options_.layer_name, ": entry without a path name after entry ", Quote(last)));
    }
    last = path;
    if (absl::Status s = ApplyEntry(a.get(), e, last); !s.ok()) {
      if (!ctx.status.ok()) return Fail(last, ctx.status);
      return Fail(last, s);
    }
    ++stats_.entries;
  }
  stats_.tar_bytes = static_cast<uint64_t>(archive_filter_bytes(a.get(), 0));
  return stats_;
}

absl::StatusOr<Applier::Resolved> Applier::ResolveDir(const std::vector<std::string>& comps,
                                                      size_t n, bool create) {
  std::vector<std::pair<Ino, std::string>> stack;  // from the root
  stack.emplace_back(kRootIno, "");
  std::deque<std::string> todo(comps.begin(), comps.begin() + static_cast<ptrdiff_t>(n));
  int links = 0;
  while (!todo.empty()) {
    std::string c = std::move(todo.front());
    todo.pop_front();
    if (c.empty() || c == ".") continue;
    if (c == "..") {
      if (stack.size() > 1) stack.pop_back();
      continue;
    }
    Ino cur = stack.back().first;
    absl::StatusOr<Ino> child = fs_.LookupChild(cur, c);
    if (!child.ok()) return child.status();
    if (*child == 0) {
      if (!create) {
        return absl::NotFoundError(absl::StrCat("directory ", Quote(c), " does not exist"));
      }
      // containerd's mkparent: 0755, root-owned.
      absl::StatusOr<Ino> made = fs_.Mkdir(cur, c, DefaultDirAttr());
      if (!made.ok()) return made.status();
      stack.emplace_back(*made, std::move(c));
      continue;
    }
    absl::StatusOr<Attr> attr = fs_.GetAttr(*child);
    if (!attr.ok()) return attr.status();
    if (IsDirMode(attr->mode)) {
      stack.emplace_back(*child, std::move(c));
    } else if (S_ISLNK(attr->mode)) {
      if (++links > kMaxSymlinks) {
        return absl::InvalidArgumentError("too many levels of symbolic links in the path");
      }
      absl::StatusOr<std::string> target = fs_.ReadLink(*child);
      if (!target.ok()) return target.status();
      if (absl::StartsWith(*target, "/")) stack.resize(1);
      std::vector<std::string> parts = absl::StrSplit(*target, '/', absl::SkipEmpty());
      todo.insert(todo.begin(), parts.begin(), parts.end());
    } else {
      return absl::FailedPreconditionError(
          absl::StrCat("path component ", Quote(c), " is not a directory"));
    }
  }
  Resolved r;
  r.ino = stack.back().first;
  for (size_t i = 1; i < stack.size(); ++i) {
    if (i > 1) r.path += '/';
    r.path += stack[i].second;
  }
  return r;
}

absl::Status Applier::RemoveIfExists(Ino parent, const std::string& name) {
  absl::StatusOr<Ino> ino = fs_.LookupChild(parent, name);
  if (!ino.ok()) return ino.status();
  if (*ino == 0) return absl::OkStatus();
  RemovedSomething();
  return fs_.Remove(parent, name);
}

absl::Status Applier::Opaque(const Resolved& dir) {
  // containerd walks the directory and removes every path this layer did not unpack, descending
  // into the directories it keeps.
  std::vector<std::pair<Ino, std::string>> pending{{dir.ino, dir.path}};
  while (!pending.empty()) {
    auto [ino, path] = std::move(pending.back());
    pending.pop_back();
    const std::string prefix = path.empty() ? "" : path + "/";
    std::vector<std::pair<Ino, std::string>> kept_dirs;
    absl::StatusOr<std::vector<DirEntry>> removed = fs_.RemoveChildren(ino, [&](const DirEntry& e) {
      std::string child = prefix + e.name;
      if (!unpacked_.contains(child)) return true;
      if (IsDirMode(e.type)) kept_dirs.emplace_back(e.ino, std::move(child));
      return false;
    });
    if (!removed.ok()) return removed.status();
    if (!removed->empty()) RemovedSomething();
    for (auto& d : kept_dirs) pending.push_back(std::move(d));
  }
  return absl::OkStatus();
}

absl::StatusOr<Attr> Applier::AttrOf(struct archive_entry* e, uint32_t type) {
  Attr a;
  a.mode = type | (static_cast<uint32_t>(archive_entry_perm(e)) & 07777);
  int64_t uid = archive_entry_uid(e), gid = archive_entry_gid(e);
  if (uid < 0 || uid > 0xffffffffLL || gid < 0 || gid > 0xffffffffLL) {
    return absl::InvalidArgumentError(absl::StrCat("uid ", uid, " or gid ", gid, " out of range"));
  }
  a.uid = static_cast<uint32_t>(uid);
  a.gid = static_cast<uint32_t>(gid);
  a.mtime = MakeTime(archive_entry_mtime(e), archive_entry_mtime_nsec(e));
  // containerd sets atime to the later of the header's access and modification times.
  a.atime = a.mtime;
  if (archive_entry_atime_is_set(e)) {
    Timespec at = MakeTime(archive_entry_atime(e), archive_entry_atime_nsec(e));
    if (Later(at, a.mtime)) a.atime = at;
  }
  // The kernel would stamp ctime with the current time; the header's, else mtime, keeps the
  // output reproducible.
  a.ctime = archive_entry_ctime_is_set(e)
                ? MakeTime(archive_entry_ctime(e), archive_entry_ctime_nsec(e))
                : a.mtime;
  a.rdev_major = static_cast<uint32_t>(archive_entry_rdevmajor(e));
  a.rdev_minor = static_cast<uint32_t>(archive_entry_rdevminor(e));
  return a;
}

absl::StatusOr<std::vector<Xattr>> Applier::XattrsOf(struct archive_entry* e) {
  std::vector<Xattr> out;
  archive_entry_xattr_reset(e);
  const char* name = nullptr;
  const void* value = nullptr;
  size_t size = 0;
  while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK) {
    if (name == nullptr || *name == '\0') {
      return absl::InvalidArgumentError("extended attribute without a name");
    }
    out.push_back(Xattr{name, std::string(static_cast<const char*>(value), size)});
  }
  return out;
}

absl::Status Applier::WriteData(struct archive* a, struct archive_entry* e, FileWriter& w) {
  const uint64_t size = static_cast<uint64_t>(archive_entry_size(e));
  while (true) {
    const void* buf = nullptr;
    size_t n = 0;
    la_int64_t offset = 0;
    int r = archive_read_data_block(a, &buf, &n, &offset);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) {
      const char* msg = archive_error_string(a);
      return absl::InvalidArgumentError(
          absl::StrCat("reading file data: ", msg ? msg : "unknown libarchive error"));
    }
    if (offset < 0 || static_cast<uint64_t>(offset) > size || n > size - offset) {
      return absl::InvalidArgumentError(absl::StrCat("data block at ", offset, " of ", n,
                                                     " bytes is outside the file size ", size));
    }
    if (n == 0) continue;
    if (absl::Status s = w.Write(static_cast<uint64_t>(offset),
                                 absl::string_view(static_cast<const char*>(buf), n));
        !s.ok()) {
      return s;
    }
    stats_.file_bytes += n;
  }
  return w.Finish(size);
}

absl::Status Applier::ApplyEntry(struct archive* a, struct archive_entry* e,
                                 absl::string_view name) {
  if (name.size() > options_.max_path_length) {
    return absl::InvalidArgumentError(absl::StrCat(
        "path of ", name.size(), " bytes is longer than the limit ", options_.max_path_length));
  }
  std::vector<std::string> comps = CleanComponents(name);
  if (comps.empty()) return absl::OkStatus();  // the root itself: containerd skips it
  const std::string& base = comps.back();

  // Parent directory, resolved and created as needed (cached per raw parent path).
  std::string raw_parent = absl::StrJoin(comps.begin(), comps.end() - 1, "/");
  Resolved parent;
  if (auto it = parent_cache_.find(raw_parent); it != parent_cache_.end()) {
    parent = it->second;
  } else {
    absl::StatusOr<Resolved> r = ResolveDir(comps, comps.size() - 1, /*create=*/true);
    if (!r.ok()) return r.status();
    parent = *r;
    if (parent_cache_.size() >= kParentCacheMax) parent_cache_.clear();
    parent_cache_.emplace(raw_parent, parent);
  }
  const std::string path = parent.path.empty() ? base : absl::StrCat(parent.path, "/", base);

  // Whiteouts.
  if (base == kOpaqueMarker) {
    ++stats_.whiteouts;
    return Opaque(parent);
  }
  if (absl::StartsWith(base, kWhiteoutPrefix)) {
    std::string original = base.substr(kWhiteoutPrefix.size());
    if (original.empty() || original == "." || original == "..") {
      return absl::InvalidArgumentError(absl::StrCat("invalid whiteout name ", Quote(base)));
    }
    ++stats_.whiteouts;
    return RemoveIfExists(parent.ino, original);
  }

  const char* hardlink = archive_entry_hardlink(e);
  const uint32_t type = hardlink != nullptr ? 0 : archive_entry_filetype(e);
  if (hardlink == nullptr && type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK &&
      type != AE_IFCHR && type != AE_IFBLK && type != AE_IFIFO) {
    return absl::InvalidArgumentError(absl::StrCat("unsupported entry type ", type));
  }
  absl::StatusOr<Attr> attr = AttrOf(e, type);
  if (!attr.ok()) return attr.status();
  absl::StatusOr<std::vector<Xattr>> xattrs = XattrsOf(e);
  if (!xattrs.ok()) return xattrs.status();
  if (type == AE_IFREG) {
    if (!archive_entry_size_is_set(e) || archive_entry_size(e) < 0 ||
        static_cast<uint64_t>(archive_entry_size(e)) > options_.max_file_size) {
      return absl::InvalidArgumentError(absl::StrCat("file size ", archive_entry_size(e),
                                                     " is invalid or above the limit ",
                                                     options_.max_file_size));
    }
    const uint64_t blocks = (static_cast<uint64_t>(archive_entry_size(e)) + 4095) / 4096;
    if (archive_entry_sparse_count(e) == 0 && blocks > fs_.free_blocks()) {
      return absl::ResourceExhaustedError(
          absl::StrCat("file of ", archive_entry_size(e), " bytes does not fit in the ",
                       fs_.free_blocks(), " free blocks of the file system"));
    }
  }

  // Whatever is at the path goes, unless both it and the entry are directories.
  absl::StatusOr<Ino> existing = fs_.LookupChild(parent.ino, base);
  if (!existing.ok()) return existing.status();
  if (*existing != 0) {
    absl::StatusOr<Attr> old = fs_.GetAttr(*existing);
    if (!old.ok()) return old.status();
    if (IsDirMode(old->mode) && type == AE_IFDIR) {
      if (absl::Status s = fs_.SetAttr(*existing, *attr); !s.ok()) return s;
      if (absl::Status s = fs_.SetXattrs(*existing, *xattrs); !s.ok()) return s;
      unpacked_.insert(path);
      return absl::OkStatus();
    }
    RemovedSomething();
    if (absl::Status s = fs_.Remove(parent.ino, base); !s.ok()) return s;
  }

  Ino ino = 0;
  if (hardlink != nullptr) {
    absl::string_view target_name(hardlink);
    if (target_name.size() > options_.max_path_length) {
      return absl::InvalidArgumentError("hard link target is too long");
    }
    std::vector<std::string> tcomps = CleanComponents(target_name);
    if (tcomps.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("hard link target ", Quote(target_name), " is the root"));
    }
    absl::StatusOr<Resolved> tdir = ResolveDir(tcomps, tcomps.size() - 1, /*create=*/false);
    absl::StatusOr<Ino> target =
        tdir.ok() ? fs_.LookupChild(tdir->ino, tcomps.back()) : absl::StatusOr<Ino>(tdir.status());
    if (!target.ok() || *target == 0) {
      return absl::NotFoundError(
          absl::StrCat("hard link target ", Quote(target_name), " does not exist",
                       target.ok() ? "" : absl::StrCat(" (", target.status().message(), ")")));
    }
    if (absl::Status s = fs_.Link(parent.ino, base, *target); !s.ok()) return s;
    unpacked_.insert(path);
    // containerd does not touch the metadata of the linked inode.
    return absl::OkStatus();
  }
  switch (type) {
    case AE_IFDIR: {
      absl::StatusOr<Ino> made = fs_.Mkdir(parent.ino, base, *attr);
      if (!made.ok()) return made.status();
      ino = *made;
      break;
    }
    case AE_IFREG: {
      absl::StatusOr<std::unique_ptr<FileWriter>> w = fs_.CreateFile(parent.ino, base, *attr);
      if (!w.ok()) return w.status();
      ino = (*w)->ino();
      unpacked_.insert(path);
      if (absl::Status s = WriteData(a, e, **w); !s.ok()) return s;
      break;
    }
    case AE_IFLNK: {
      const char* target = archive_entry_symlink(e);
      absl::string_view t(target == nullptr ? "" : target);
      if (t.size() > options_.max_path_length) {
        return absl::InvalidArgumentError("symlink target is too long");
      }
      absl::StatusOr<Ino> made = fs_.Symlink(parent.ino, base, t, *attr);
      if (!made.ok()) return made.status();
      ino = *made;
      break;
    }
    default: {
      absl::StatusOr<Ino> made = fs_.Mknod(parent.ino, base, *attr);
      if (!made.ok()) return made.status();
      ino = *made;
      break;
    }
  }
  unpacked_.insert(path);
  return fs_.SetXattrs(ino, *xattrs);
}

}  // namespace

absl::StatusOr<ApplyStats> ApplyTar(Ext4Filesystem& fs, const TarReader& reader,
                                    const ApplyOptions& options) {
  Applier applier(fs, options);
  return applier.Run(reader);
}

absl::StatusOr<ApplyStats> ApplyTarFile(Ext4Filesystem& fs,
                                        const blockstore::RandomAccessFile& file,
                                        const ApplyOptions& options) {
  uint64_t pos = 0;
  TarReader reader = [&](char* buf, size_t n) -> absl::StatusOr<size_t> {
    absl::StatusOr<size_t> got = file.Pread(pos, n, buf);
    if (got.ok()) pos += *got;
    return got;
  };
  return ApplyTar(fs, reader, options);
}

absl::StatusOr<ApplyStats> ApplyTarFd(Ext4Filesystem& fs, int fd, const ApplyOptions& options) {
  TarReader reader = [fd](char* buf, size_t n) -> absl::StatusOr<size_t> {
    while (true) {
      ssize_t r = ::read(fd, buf, n);
      if (r >= 0) return static_cast<size_t>(r);
      if (errno != EINTR) {
        return absl::Status(absl::ErrnoToStatusCode(errno),
                            absl::StrCat("read: ", std::strerror(errno)));
      }
    }
  };
  return ApplyTar(fs, reader, options);
}

}  // namespace dadi::converter
