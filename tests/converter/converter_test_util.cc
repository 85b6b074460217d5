#include "tests/converter/converter_test_util.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "blockstore/remote/digest.h"
#include "blockstore/remote/manifest.h"

namespace dadi::testing {

using converter::Attr;
using converter::DirEntry;
using converter::Ext4Filesystem;
using converter::Ino;

// --- TarBuilder ------------------------------------------------------------------------------

TarBuilder::TarBuilder(Format format, Compression compression) {
  a_ = archive_write_new();
  switch (format) {
    case Format::kPax:
      archive_write_set_format_pax(a_);
      break;
    case Format::kGnu:
      archive_write_set_format_gnutar(a_);
      break;
    case Format::kUstar:
      archive_write_set_format_ustar(a_);
      break;
  }
  switch (compression) {
    case Compression::kNone:
      break;
    case Compression::kGzip:
      archive_write_add_filter_gzip(a_);
      break;
    case Compression::kZstd:
      archive_write_add_filter_zstd(a_);
      break;
  }
  archive_write_set_bytes_per_block(a_, 10240);
  // No zero padding after a compressed stream (a zstd reader takes it for a bad frame).
  archive_write_set_bytes_in_last_block(a_, 1);
  archive_write_open(
      a_, &out_, nullptr,
      [](struct archive*, void* data, const void* buf, size_t n) -> la_ssize_t {
        static_cast<std::string*>(data)->append(static_cast<const char*>(buf), n);
        return static_cast<la_ssize_t>(n);
      },
      nullptr);
}

TarBuilder::~TarBuilder() {
  if (a_ != nullptr) archive_write_free(a_);
}

void TarBuilder::Add(const std::string& path, unsigned type, const Meta& m,
                     const std::string* content, const std::string* symlink,
                     const std::string* hardlink, uint32_t major, uint32_t minor) {
  struct archive_entry* e = archive_entry_new();
  archive_entry_set_pathname(e, path.c_str());
  if (hardlink != nullptr) {
    archive_entry_set_hardlink(e, hardlink->c_str());
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_size(e, 0);
  } else {
    archive_entry_set_filetype(e, type);
  }
  archive_entry_set_perm(e, m.mode & 07777);
  archive_entry_set_uid(e, m.uid);
  archive_entry_set_gid(e, m.gid);
  archive_entry_set_mtime(e, m.mtime, m.mtime_nsec);
  if (symlink != nullptr) archive_entry_set_symlink(e, symlink->c_str());
  if (type == AE_IFCHR || type == AE_IFBLK) {
    archive_entry_set_rdevmajor(e, major);
    archive_entry_set_rdevminor(e, minor);
  }
  for (const auto& [k, v] : m.xattrs) {
    archive_entry_xattr_add_entry(e, k.c_str(), v.data(), v.size());
  }
  if (content != nullptr) archive_entry_set_size(e, static_cast<la_int64_t>(content->size()));
  if (archive_write_header(a_, e) != ARCHIVE_OK) {
    std::fprintf(stderr, "TarBuilder: header %s: %s\n", path.c_str(), archive_error_string(a_));
    std::abort();
  }
  if (content != nullptr && !content->empty()) {
    archive_write_data(a_, content->data(), content->size());
  }
  archive_entry_free(e);
}

TarBuilder& TarBuilder::File(const std::string& path, const std::string& content, const Meta& m) {
  Add(path, AE_IFREG, m, &content, nullptr, nullptr);
  return *this;
}
TarBuilder& TarBuilder::Dir(const std::string& path, const Meta& m) {
  Add(path, AE_IFDIR, m, nullptr, nullptr, nullptr);
  return *this;
}
TarBuilder& TarBuilder::Symlink(const std::string& path, const std::string& target, const Meta& m) {
  Meta mm = m;
  mm.mode = 0777;
  Add(path, AE_IFLNK, mm, nullptr, &target, nullptr);
  return *this;
}
TarBuilder& TarBuilder::Hardlink(const std::string& path, const std::string& target) {
  Add(path, AE_IFREG, Meta{}, nullptr, nullptr, &target);
  return *this;
}
TarBuilder& TarBuilder::Device(const std::string& path, bool block, uint32_t major, uint32_t minor,
                               const Meta& m) {
  Add(path, block ? AE_IFBLK : AE_IFCHR, m, nullptr, nullptr, nullptr, major, minor);
  return *this;
}
TarBuilder& TarBuilder::Fifo(const std::string& path, const Meta& m) {
  Add(path, AE_IFIFO, m, nullptr, nullptr, nullptr);
  return *this;
}
TarBuilder& TarBuilder::SparseFile(const std::string& path, uint64_t size,
                                   const std::vector<std::pair<uint64_t, std::string>>& regions) {
  struct archive_entry* e = archive_entry_new();
  archive_entry_set_pathname(e, path.c_str());
  archive_entry_set_filetype(e, AE_IFREG);
  archive_entry_set_perm(e, 0644);
  archive_entry_set_mtime(e, 1700000000, 0);
  archive_entry_set_size(e, static_cast<la_int64_t>(size));
  for (const auto& [off, data] : regions) {
    archive_entry_sparse_add_entry(e, static_cast<la_int64_t>(off),
                                   static_cast<la_int64_t>(data.size()));
  }
  if (archive_write_header(a_, e) != ARCHIVE_OK) {
    std::fprintf(stderr, "TarBuilder: header %s: %s\n", path.c_str(), archive_error_string(a_));
    std::abort();
  }
  // The writer takes the whole logical content and leaves the holes out.
  std::string zeros(1 << 16, '\0');
  uint64_t pos = 0;
  for (const auto& [off, data] : regions) {
    while (pos < off) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(off - pos, zeros.size()));
      archive_write_data(a_, zeros.data(), n);
      pos += n;
    }
    archive_write_data(a_, data.data(), data.size());
    pos += data.size();
  }
  while (pos < size) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(size - pos, zeros.size()));
    archive_write_data(a_, zeros.data(), n);
    pos += n;
  }
  archive_entry_free(e);
  return *this;
}

TarBuilder& TarBuilder::Whiteout(const std::string& path) {
  size_t slash = path.rfind('/');
  std::string wh = slash == std::string::npos
                       ? ".wh." + path
                       : path.substr(0, slash + 1) + ".wh." + path.substr(slash + 1);
  return File(wh, "");
}
TarBuilder& TarBuilder::Opaque(const std::string& dir) { return File(dir + "/.wh..wh..opq", ""); }

std::string TarBuilder::Finish() {
  archive_write_close(a_);
  archive_write_free(a_);
  a_ = nullptr;
  return std::move(out_);
}

// --- trees -----------------------------------------------------------------------------------

std::string Describe(const Node& n) {
  std::string s = absl::StrCat("mode=", absl::Hex(n.mode), " uid=", n.uid, " gid=", n.gid,
                               " mtime=", n.mtime_sec, ".", n.mtime_nsec, " atime=", n.atime_sec,
                               ".", n.atime_nsec, " nlink=", n.nlink, " size=", n.size,
                               " ino=", n.ino, " rdev=", n.rdev_major, ":", n.rdev_minor);
  if (!n.content.empty()) {
    absl::StrAppend(&s, " content=\"", absl::CHexEscape(n.content.substr(0, 64)),
                    n.content.size() > 64 ? "...\"" : "\"");
  }
  for (const auto& [k, v] : n.xattrs) absl::StrAppend(&s, " xattr:", k, "=", absl::CHexEscape(v));
  return s;
}

std::string TreeDiff(const Tree& a, const Tree& b) {
  std::string out;
  for (const auto& [p, n] : a) {
    auto it = b.find(p);
    if (it == b.end()) {
      absl::StrAppend(&out, "only in first: ", p, ": ", Describe(n), "\n");
    } else if (!(it->second == n)) {
      absl::StrAppend(&out, "differs: ", p, "\n  first:  ", Describe(n),
                      "\n  second: ", Describe(it->second), "\n");
    }
  }
  for (const auto& [p, n] : b) {
    if (!a.contains(p)) absl::StrAppend(&out, "only in second: ", p, ": ", Describe(n), "\n");
  }
  return out;
}

absl::StatusOr<Tree> DumpExt4(Ext4Filesystem& fs) {
  Tree tree;
  std::vector<std::pair<Ino, std::string>> pending{{converter::kRootIno, ""}};
  while (!pending.empty()) {
    auto [dir, prefix] = pending.back();
    pending.pop_back();
    absl::StatusOr<std::vector<DirEntry>> entries = fs.ReadDir(dir);
    if (!entries.ok()) return entries.status();
    for (const DirEntry& e : *entries) {
      std::string path = prefix.empty() ? e.name : prefix + "/" + e.name;
      if (path == "lost+found") continue;
      absl::StatusOr<Attr> a = fs.GetAttr(e.ino);
      if (!a.ok()) return a.status();
      Node n;
      n.mode = a->mode;
      n.uid = a->uid;
      n.gid = a->gid;
      n.mtime_sec = a->mtime.sec;
      n.mtime_nsec = a->mtime.nsec;
      n.atime_sec = a->atime.sec;
      n.atime_nsec = a->atime.nsec;
      n.nlink = a->nlink;
      n.size = S_ISDIR(a->mode) ? 0 : a->size;
      n.ino = e.ino;
      if (S_ISCHR(a->mode) || S_ISBLK(a->mode)) {
        n.rdev_major = a->rdev_major;
        n.rdev_minor = a->rdev_minor;
      }
      if (S_ISREG(a->mode)) {
        absl::StatusOr<std::string> data = fs.ReadFile(e.ino, 0, a->size);
        if (!data.ok()) return data.status();
        n.content = *data;
      } else if (S_ISLNK(a->mode)) {
        absl::StatusOr<std::string> t = fs.ReadLink(e.ino);
        if (!t.ok()) return t.status();
        n.content = *t;
      }
      absl::StatusOr<std::vector<converter::Xattr>> x = fs.GetXattrs(e.ino);
      if (!x.ok()) return x.status();
      for (auto& xa : *x) n.xattrs.emplace_back(xa.name, xa.value);
      std::sort(n.xattrs.begin(), n.xattrs.end());
      if (S_ISDIR(a->mode)) pending.emplace_back(e.ino, path);
      tree[path] = std::move(n);
    }
  }
  return tree;
}

namespace {

absl::Status Errno(absl::string_view what) {
  return absl::Status(absl::ErrnoToStatusCode(errno), absl::StrCat(what, ": ", strerror(errno)));
}

absl::StatusOr<std::string> ReadAll(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Errno("open " + path);
  std::string out;
  char buf[65536];
  while (true) {
    ssize_t r = ::read(fd, buf, sizeof(buf));
    if (r < 0) {
      ::close(fd);
      return Errno("read " + path);
    }
    if (r == 0) break;
    out.append(buf, static_cast<size_t>(r));
  }
  ::close(fd);
  return out;
}

}  // namespace

absl::StatusOr<Tree> DumpDir(const std::string& root) {
  Tree tree;
  std::vector<std::string> pending{""};
  while (!pending.empty()) {
    std::string prefix = pending.back();
    pending.pop_back();
    std::string dirpath = prefix.empty() ? root : root + "/" + prefix;
    DIR* d = ::opendir(dirpath.c_str());
    if (d == nullptr) return Errno("opendir " + dirpath);
    std::vector<std::string> names;
    while (struct dirent* de = ::readdir(d)) {
      std::string name = de->d_name;
      if (name != "." && name != "..") names.push_back(name);
    }
    ::closedir(d);
    for (const std::string& name : names) {
      std::string path = prefix.empty() ? name : prefix + "/" + name;
      if (path == "lost+found") continue;
      std::string full = root + "/" + path;
      struct stat st;
      if (::lstat(full.c_str(), &st) != 0) return Errno("lstat " + full);
      Node n;
      n.mode = st.st_mode;
      n.uid = st.st_uid;
      n.gid = st.st_gid;
      n.mtime_sec = st.st_mtim.tv_sec;
      n.mtime_nsec = static_cast<uint32_t>(st.st_mtim.tv_nsec);
      n.atime_sec = st.st_atim.tv_sec;
      n.atime_nsec = static_cast<uint32_t>(st.st_atim.tv_nsec);
      n.nlink = static_cast<uint32_t>(st.st_nlink);
      n.size = S_ISDIR(st.st_mode) ? 0 : static_cast<uint64_t>(st.st_size);
      n.ino = st.st_ino;
      if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
        n.rdev_major = major(st.st_rdev);
        n.rdev_minor = minor(st.st_rdev);
      }
      if (S_ISREG(st.st_mode)) {
        absl::StatusOr<std::string> data = ReadAll(full);
        if (!data.ok()) return data.status();
        n.content = *data;
      } else if (S_ISLNK(st.st_mode)) {
        char buf[8192];
        ssize_t r = ::readlink(full.c_str(), buf, sizeof(buf));
        if (r < 0) return Errno("readlink " + full);
        n.content.assign(buf, static_cast<size_t>(r));
      }
      char names_buf[65536];
      ssize_t len = ::llistxattr(full.c_str(), names_buf, sizeof(names_buf));
      if (len < 0) return Errno("llistxattr " + full);
      for (absl::string_view xn :
           absl::StrSplit(absl::string_view(names_buf, len), '\0', absl::SkipEmpty())) {
        std::string key(xn);
        char val[65536];
        ssize_t vl = ::lgetxattr(full.c_str(), key.c_str(), val, sizeof(val));
        if (vl < 0) return Errno("lgetxattr " + full + " " + key);
        n.xattrs.emplace_back(key, std::string(val, static_cast<size_t>(vl)));
      }
      std::sort(n.xattrs.begin(), n.xattrs.end());
      if (S_ISDIR(st.st_mode)) pending.push_back(path);
      tree[path] = std::move(n);
    }
  }
  return tree;
}

absl::Status ExportFlat(const blockstore::RandomAccessFile& stack, const std::string& path) {
  auto dev = converter::CreateFileBlockDevice(path, stack.Size());
  if (!dev.ok()) return dev.status();
  std::string buf(1 << 20, '\0');
  const std::string zero(buf.size(), '\0');
  for (uint64_t off = 0; off < stack.Size(); off += buf.size()) {
    if (absl::Status s = blockstore::PreadExact(stack, off, buf.size(), buf.data(), "export");
        !s.ok()) {
      return s;
    }
    if (buf == zero) continue;
    if (absl::Status s = (*dev)->Pwrite(off, buf); !s.ok()) return s;
  }
  return (*dev)->Flush();
}

int RunShell(const std::string& command, std::string* output) {
  FILE* p = ::popen((command + " 2>&1").c_str(), "r");
  if (p == nullptr) return -1;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) output->append(buf, n);
  int status = ::pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

absl::Status Fsck(const std::string& image) {
  std::string cmd = absl::StrCat("e2fsck -fn '", image, "' 2>&1");
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return Errno("popen e2fsck");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  int status = ::pclose(p);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(
        absl::StrCat("e2fsck -fn exited with status ", WEXITSTATUS(status), ":\n", out));
  }
  return absl::OkStatus();
}

// --- LoopMount -------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<LoopMount>> LoopMount::Mount(const std::string& image,
                                                            const std::string& dir) {
  if (::access("/dev/loop-control", F_OK) != 0) {
    return absl::UnavailableError("no /dev/loop-control");
  }
  std::unique_ptr<LoopMount> m(new LoopMount());
  m->dir_ = dir;
  int ctl = ::open("/dev/loop-control", O_RDWR | O_CLOEXEC);
  if (ctl < 0)
    return absl::UnavailableError(absl::StrCat("open /dev/loop-control: ", strerror(errno)));
  int image_fd = ::open(image.c_str(), O_RDONLY | O_CLOEXEC);
  if (image_fd < 0) {
    ::close(ctl);
    return Errno("open " + image);
  }
  // A free device can be taken by another process between GET_FREE and CONFIGURE: retry.
  absl::Status last = absl::UnavailableError("no free loop device");
  for (int attempt = 0; attempt < 10 && m->loop_fd_ < 0; ++attempt) {
    int n = ::ioctl(ctl, LOOP_CTL_GET_FREE);
    if (n < 0) {
      last = absl::UnavailableError(absl::StrCat("LOOP_CTL_GET_FREE: ", strerror(errno)));
      break;
    }
    std::string dev = absl::StrCat("/dev/loop", n);
    int fd = ::open(dev.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      last = absl::UnavailableError(absl::StrCat("open ", dev, ": ", strerror(errno)));
      continue;
    }
    struct loop_config cfg;
    std::memset(&cfg, 0, sizeof(cfg));
    cfg.fd = static_cast<uint32_t>(image_fd);
    cfg.info.lo_flags = LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR;
    if (::ioctl(fd, LOOP_CONFIGURE, &cfg) != 0) {
      last = absl::UnavailableError(absl::StrCat("LOOP_CONFIGURE ", dev, ": ", strerror(errno)));
      ::close(fd);
      if (errno == EBUSY) continue;
      break;
    }
    m->loop_fd_ = fd;
    m->loop_dev_ = dev;
  }
  ::close(image_fd);
  ::close(ctl);
  if (m->loop_fd_ < 0) return last;
  if (::mount(m->loop_dev_.c_str(), dir.c_str(), "ext4", MS_RDONLY | MS_NOATIME, "") != 0) {
    if (errno == EPERM || errno == EACCES) {  // not allowed to mount here: the test skips
      return absl::UnavailableError(absl::StrCat("mount: ", strerror(errno)));
    }
    return absl::InternalError(
        absl::StrCat("mount ", m->loop_dev_, " on ", dir, ": ", strerror(errno)));
  }
  m->mounted_ = true;
  return m;
}

LoopMount::~LoopMount() {
  if (mounted_ && ::umount2(dir_.c_str(), 0) != 0) {
    std::fprintf(stderr, "umount %s: %s; detaching lazily\n", dir_.c_str(), strerror(errno));
    ::umount2(dir_.c_str(), MNT_DETACH);
  }
  if (loop_fd_ >= 0) {
    // AUTOCLEAR releases the device at the last close; CLR_FD covers a failed mount.
    ::ioctl(loop_fd_, LOOP_CLR_FD, 0);
    ::close(loop_fd_);
  }
}

namespace {

std::string PutBlob(const std::string& dir, const std::string& data) {
  std::string digest = blockstore::Sha256Digest(data);
  std::ofstream(dir + "/blobs/sha256/" + digest.substr(7), std::ios::binary) << data;
  return digest;
}

}  // namespace

void WriteOciLayout(const std::string& dir, const std::vector<std::string>& layers) {
  std::filesystem::create_directories(dir + "/blobs/sha256");
  blockstore::ImageManifest m;
  m.media_type = std::string(blockstore::kOciManifestMediaType);
  std::string diff_ids;
  for (const std::string& t : layers) {
    blockstore::Descriptor d;
    d.media_type = std::string(blockstore::kOciLayerMediaType);
    d.digest = PutBlob(dir, t);
    d.size = static_cast<int64_t>(t.size());
    m.layers.push_back(d);
    absl::StrAppend(&diff_ids, diff_ids.empty() ? "" : ",", "\"", d.digest, "\"");
  }
  const std::string config =
      absl::StrCat(R"({"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[)",
                   diff_ids, "]}}");
  m.config.media_type = std::string(blockstore::kOciConfigMediaType);
  m.config.digest = PutBlob(dir, config);
  m.config.size = static_cast<int64_t>(config.size());
  const std::string body = blockstore::SerializeImageManifest(m);
  blockstore::ImageIndex index;
  index.media_type = std::string(blockstore::kOciIndexMediaType);
  blockstore::Descriptor top;
  top.media_type = m.media_type;
  top.digest = PutBlob(dir, body);
  top.size = static_cast<int64_t>(body.size());
  top.annotations["org.opencontainers.image.ref.name"] = "v1";
  index.manifests.push_back(top);
  std::ofstream(dir + "/index.json") << blockstore::SerializeImageIndex(index);
  std::ofstream(dir + "/oci-layout") << R"({"imageLayoutVersion":"1.0.0"})";
}

}  // namespace dadi::testing
