#include "converter/verifier.h"

#include <algorithm>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "blockstore/blob/layer_blob.h"
#include "blockstore/lsmt/layer_stack.h"
#include "blockstore/remote/digest.h"
#include "converter/image/image_converter.h"
#include "converter/layer_converter.h"
#include "converter/tar_applier.h"

namespace dadi::converter {
namespace {

bool IsType(uint32_t mode, uint32_t type) { return (mode & 0170000) == type; }

absl::StatusOr<TreeEntry> ReadEntry(Ext4Filesystem& fs, Ino ino) {
  auto attr = fs.GetAttr(ino);
  if (!attr.ok()) return attr.status();
  TreeEntry e;
  e.mode = attr->mode;
  e.uid = attr->uid;
  e.gid = attr->gid;
  const bool dir = IsType(attr->mode, 0040000);
  if (!dir) {
    e.size = attr->size;
    e.mtime_sec = attr->mtime.sec;
    e.mtime_nsec = attr->mtime.nsec;
    e.nlink = attr->nlink;
  }
  if (IsType(attr->mode, 0100000)) {
    blockstore::Sha256 h;
    constexpr size_t kChunk = 1 << 20;
    for (uint64_t off = 0; off < attr->size; off += kChunk) {
      auto data = fs.ReadFile(ino, off, kChunk);
      if (!data.ok()) return data.status();
      if (data->empty()) break;
      h.Update(*data);
    }
    e.content = h.Finish();
  } else if (IsType(attr->mode, 0120000)) {
    auto target = fs.ReadLink(ino);
    if (!target.ok()) return target.status();
    e.content = *target;
  } else if (IsType(attr->mode, 0020000) || IsType(attr->mode, 0060000)) {
    e.rdev_major = attr->rdev_major;
    e.rdev_minor = attr->rdev_minor;
  }
  auto xattrs = fs.GetXattrs(ino);
  if (!xattrs.ok()) return xattrs.status();
  e.xattrs = *std::move(xattrs);
  std::sort(e.xattrs.begin(), e.xattrs.end(),
            [](const Xattr& a, const Xattr& b) { return a.name < b.name; });
  return e;
}

std::string Type(uint32_t mode) {
  switch (mode & 0170000) {
    case 0100000:
      return "file";
    case 0040000:
      return "directory";
    case 0120000:
      return "symlink";
    case 0020000:
      return "char device";
    case 0060000:
      return "block device";
    case 0010000:
      return "fifo";
    case 0140000:
      return "socket";
    default:
      return "unknown";
  }
}

std::string Xattrs(const std::vector<Xattr>& x) {
  std::string out = "{";
  for (size_t i = 0; i < x.size(); ++i) {
    absl::StrAppend(&out, i ? ", " : "", x[i].name, "=", x[i].value.size(), " bytes (",
                    blockstore::Sha256Digest(x[i].value).substr(7, 12), ")");
  }
  return out + "}";
}

void Differences(const std::string& path, const TreeEntry& s, const TreeEntry& c,
                 std::vector<std::string>* out) {
  auto diff = [&](absl::string_view what, const std::string& a, const std::string& b) {
    out->push_back(absl::StrCat(path, ": ", what, " ", a, " (source) != ", b, " (converted)"));
  };
  if ((s.mode & 0170000) != (c.mode & 0170000)) {
    diff("type", Type(s.mode), Type(c.mode));
    return;
  }
  if (s.mode != c.mode) diff("mode", absl::StrFormat("%o", s.mode), absl::StrFormat("%o", c.mode));
  if (s.uid != c.uid || s.gid != c.gid) {
    diff("owner", absl::StrCat(s.uid, ":", s.gid), absl::StrCat(c.uid, ":", c.gid));
  }
  if (s.size != c.size) diff("size", absl::StrCat(s.size), absl::StrCat(c.size));
  if (s.content != c.content) {
    diff(IsType(s.mode, 0120000) ? "link target" : "content", s.content, c.content);
  }
  if (s.mtime_sec != c.mtime_sec || s.mtime_nsec != c.mtime_nsec) {
    diff("mtime", absl::StrFormat("%d.%09u", s.mtime_sec, s.mtime_nsec),
         absl::StrFormat("%d.%09u", c.mtime_sec, c.mtime_nsec));
  }
  if (s.nlink != c.nlink) diff("link count", absl::StrCat(s.nlink), absl::StrCat(c.nlink));
  if (s.rdev_major != c.rdev_major || s.rdev_minor != c.rdev_minor) {
    diff("device", absl::StrCat(s.rdev_major, ",", s.rdev_minor),
         absl::StrCat(c.rdev_major, ",", c.rdev_minor));
  }
  if (s.xattrs != c.xattrs) diff("xattrs", Xattrs(s.xattrs), Xattrs(c.xattrs));
}

struct Resolved {
  std::string platform;
  blockstore::ImageManifest manifest;
};

absl::StatusOr<Resolved> Resolve(image::ImageSource& src,
                                 const std::optional<blockstore::Platform>& want,
                                 absl::string_view what) {
  auto top = src.TopManifest();
  if (!top.ok()) return top.status();
  Resolved r;
  std::string body = top->body;
  if (blockstore::IsIndexMediaType(top->media_type)) {
    auto index = blockstore::ParseImageIndex(body);
    if (!index.ok()) return index.status();
    std::optional<blockstore::Descriptor> pick;
    if (want.has_value()) {
      auto d = blockstore::SelectPlatform(*index, *want);
      if (!d.ok())
        return absl::Status(d.status().code(), absl::StrCat(what, ": ", d.status().message()));
      pick = *d;
    } else {
      for (const auto& d : index->manifests) {
        if (d.platform.has_value() &&
            (d.platform->os == "unknown" || d.platform->architecture == "unknown")) {
          continue;
        }
        pick = d;
        break;
      }
    }
    if (!pick.has_value()) return absl::NotFoundError(absl::StrCat(what, ": index lists no image"));
    if (pick->platform.has_value()) r.platform = image::PlatformString(*pick->platform);
    auto doc = src.Manifest(pick->digest);
    if (!doc.ok()) return doc.status();
    body = doc->body;
  }
  auto m = blockstore::ParseImageManifest(body);
  if (!m.ok())
    return absl::Status(m.status().code(), absl::StrCat(what, ": ", m.status().message()));
  r.manifest = *std::move(m);
  return r;
}

absl::StatusOr<blockstore::Platform> ParsePlatformText(const std::string& text) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    size_t slash = text.find('/', start);
    parts.push_back(
        text.substr(start, slash == std::string::npos ? std::string::npos : slash - start));
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  blockstore::Platform p;
  if (parts.size() < 2) return absl::InvalidArgumentError(absl::StrCat("platform ", text));
  p.os = parts[0];
  p.architecture = parts[1];
  if (parts.size() > 2) p.variant = parts[2];
  return p;
}

}  // namespace

absl::StatusOr<FileTree> WalkTree(Ext4Filesystem& fs) {
  FileTree tree;
  std::vector<std::pair<Ino, std::string>> dirs = {{kRootIno, ""}};
  while (!dirs.empty()) {
    auto [dir, prefix] = dirs.back();
    dirs.pop_back();
    std::vector<DirEntry> entries;
    absl::Status s = fs.ForEachEntry(dir, [&](const DirEntry& e) {
      entries.push_back(e);
      return true;
    });
    if (!s.ok()) return s;
    for (const DirEntry& e : entries) {
      if (dir == kRootIno && e.name == "lost+found") continue;
      std::string path = prefix.empty() ? e.name : absl::StrCat(prefix, "/", e.name);
      auto entry = ReadEntry(fs, e.ino);
      if (!entry.ok()) {
        return absl::Status(entry.status().code(),
                            absl::StrCat(path, ": ", entry.status().message()));
      }
      if (IsType(entry->mode, 0040000)) dirs.emplace_back(e.ino, path);
      tree.emplace(std::move(path), *std::move(entry));
    }
  }
  return tree;
}

std::vector<std::string> CompareTrees(const FileTree& source, const FileTree& converted,
                                      size_t limit) {
  std::vector<std::string> out;
  auto s = source.begin();
  auto c = converted.begin();
  while (s != source.end() || c != converted.end()) {
    if (c == converted.end() || (s != source.end() && s->first < c->first)) {
      out.push_back(absl::StrCat(s->first, ": only in the source (", Type(s->second.mode), ")"));
      ++s;
    } else if (s == source.end() || c->first < s->first) {
      out.push_back(
          absl::StrCat(c->first, ": only in the converted image (", Type(c->second.mode), ")"));
      ++c;
    } else {
      if (!(s->second == c->second)) Differences(s->first, s->second, c->second, &out);
      ++s;
      ++c;
    }
  }
  if (out.size() > limit) {
    size_t more = out.size() - limit;
    out.resize(limit);
    out.push_back(absl::StrCat("... and ", more, " more differences"));
  }
  return out;
}

absl::StatusOr<VerifyReport> VerifyImage(image::ImageSource& converted, image::ImageSource& source,
                                         const VerifyOptions& options) {
  auto conv = Resolve(converted, options.platform, "converted image");
  if (!conv.ok()) return conv.status();
  std::optional<blockstore::Platform> platform = options.platform;
  if (!platform.has_value() && !conv->platform.empty()) {
    auto p = ParsePlatformText(conv->platform);
    if (!p.ok()) return p.status();
    platform = *p;
  }
  auto src = Resolve(source, platform, "source image");
  if (!src.ok()) return src.status();
  VerifyReport report;
  report.platform = conv->platform;
  report.layers = static_cast<int>(conv->manifest.layers.size());
  if (conv->manifest.layers.empty())
    return absl::InvalidArgumentError("converted image has no layers");

  // The converted image: its layer blobs as one stack, the ext4 inside read without a mount.
  std::vector<std::shared_ptr<const blockstore::SealedLayer>> layers;
  for (const auto& d : conv->manifest.layers) {
    auto file = converted.Blob(d.digest);
    if (!file.ok()) return file.status();
    auto blob = blockstore::LayerBlob::OpenAny(
        std::shared_ptr<const blockstore::RandomAccessFile>(*std::move(file)));
    if (!blob.ok()) {
      return absl::Status(blob.status().code(), absl::StrCat("converted layer ", d.digest, ": ",
                                                             blob.status().message()));
    }
    layers.push_back((*blob)->layer());
  }
  auto stack = blockstore::LayerStack::Create(std::move(layers));
  if (!stack.ok()) return stack.status();
  const uint64_t vsize = (*stack)->Size();
  auto conv_dev = NewCopyOnWriteBlockDevice(*stack);
  auto conv_fs = Ext4Filesystem::Open(conv_dev.get());
  if (!conv_fs.ok()) {
    return absl::Status(conv_fs.status().code(),
                        absl::StrCat("converted image's ext4: ", conv_fs.status().message()));
  }
  auto conv_tree = WalkTree(**conv_fs);
  if (!conv_tree.ok()) return conv_tree.status();
  (void)(*conv_fs)->Close();

  // The source image: its tar layers applied to a scratch ext4 of the same size (sparse).
  auto src_dev = CreateFileBlockDevice(absl::StrCat(options.work_dir, "/source.img"), vsize);
  if (!src_dev.ok()) return src_dev.status();
  auto src_fs = Ext4Filesystem::Create(src_dev->get(), Ext4Options{});
  if (!src_fs.ok()) return src_fs.status();
  for (const auto& d : src->manifest.layers) {
    auto file = source.Blob(d.digest);
    if (!file.ok()) return file.status();
    ApplyOptions ao;
    ao.layer_name = d.digest;
    auto applied = ApplyTarFile(**src_fs, **file, ao);
    if (!applied.ok()) return applied.status();
  }
  auto src_tree = WalkTree(**src_fs);
  if (!src_tree.ok()) return src_tree.status();
  report.entries = src_tree->size();
  report.differences = CompareTrees(*src_tree, *conv_tree);
  return report;
}

}  // namespace dadi::converter
