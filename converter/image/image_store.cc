#include "converter/image/image_store.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "blockstore/remote/digest.h"
#include "blockstore/remote/manifest.h"
#include "nlohmann/json.hpp"

namespace dadi::converter::image {
namespace {

namespace fs = std::filesystem;
using blockstore::PushOutcome;
using json = nlohmann::json;

constexpr absl::string_view kRefNameAnnotation = "org.opencontainers.image.ref.name";
constexpr size_t kMaxSmallBlob = 64 << 20;

absl::Status ErrnoError(absl::string_view what, const std::string& path) {
  int e = errno;
  std::string msg = absl::StrCat(what, " ", path, ": ", std::strerror(e));
  if (e == ENOENT) return absl::NotFoundError(msg);
  return absl::InternalError(msg);
}

// blobs/<alg>/<hex> for a digest, after checking it (a digest never escapes the directory).
absl::StatusOr<std::string> BlobPath(const std::string& dir, const std::string& digest) {
  if (absl::Status s = blockstore::CheckDigest(digest, "blob digest"); !s.ok()) return s;
  size_t colon = digest.find(':');
  return absl::StrCat(dir, "/blobs/", digest.substr(0, colon), "/", digest.substr(colon + 1));
}

absl::Status VerifyDigest(absl::string_view data, const std::string& digest,
                          absl::string_view where) {
  std::string got = blockstore::Sha256Digest(data);
  if (got != digest) {
    return absl::DataLossError(absl::StrCat(where, ": blob ", digest, " has content digest ", got));
  }
  return absl::OkStatus();
}

absl::Status CopyFile(const std::string& from, const std::string& to) {
  std::error_code ec;
  fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
  if (ec) return absl::InternalError(absl::StrCat("copy ", from, " to ", to, ": ", ec.message()));
  return absl::OkStatus();
}

// ---- OCI layout ----

class OciLayoutSource : public ImageSource {
 public:
  OciLayoutSource(std::string dir, std::string tag, std::string name)
      : dir_(std::move(dir)), tag_(std::move(tag)), name_(std::move(name)) {}

  absl::StatusOr<ManifestDocument> TopManifest() override {
    auto body = ReadWholeFile(dir_ + "/index.json", blockstore::kMaxManifestBytes);
    if (!body.ok()) {
      return absl::Status(body.status().code(),
                          absl::StrCat(name_, ": not an OCI layout: ", body.status().message()));
    }
    auto index = blockstore::ParseImageIndex(*body);
    if (!index.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(name_, ": index.json: ", index.status().message()));
    }
    std::vector<const blockstore::Descriptor*> named, all;
    for (const auto& d : index->manifests) {
      all.push_back(&d);
      auto it = d.annotations.find(std::string(kRefNameAnnotation));
      if (!tag_.empty() && it != d.annotations.end() && it->second == tag_) named.push_back(&d);
    }
    const blockstore::Descriptor* pick = nullptr;
    if (!tag_.empty()) {
      if (named.empty())
        return absl::NotFoundError(absl::StrCat(name_, ": no image tagged \"", tag_, "\""));
      pick = named.front();
    } else if (all.size() == 1) {
      pick = all.front();
    } else if (!all.empty() && std::all_of(all.begin(), all.end(),
                                           [](auto* d) { return d->platform.has_value(); })) {
      // index.json itself lists the platforms of one image.
      ManifestDocument doc;
      doc.media_type = std::string(blockstore::kOciIndexMediaType);
      doc.digest = blockstore::Sha256Digest(*body);
      doc.body = *std::move(body);
      return doc;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat(name_, ": index.json holds ", all.size(), " images; name one with :TAG"));
    }
    return Manifest(pick->digest);
  }

  absl::StatusOr<ManifestDocument> Manifest(const std::string& digest) override {
    auto body = SmallBlob(digest);
    if (!body.ok()) return body.status();
    auto type = blockstore::DetectManifestMediaType(*body, "");
    if (!type.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(name_, ": manifest ", digest, ": ", type.status().message()));
    }
    return ManifestDocument{*type, digest, *std::move(body)};
  }

  absl::StatusOr<std::string> SmallBlob(const std::string& digest) override {
    auto path = BlobPath(dir_, digest);
    if (!path.ok()) return path.status();
    auto data = ReadWholeFile(*path, kMaxSmallBlob);
    if (!data.ok()) {
      return absl::Status(data.status().code(),
                          absl::StrCat(name_, ": blob ", digest, ": ", data.status().message()));
    }
    if (absl::Status s = VerifyDigest(*data, digest, name_); !s.ok()) return s;
    return data;
  }

  absl::StatusOr<std::unique_ptr<blockstore::RandomAccessFile>> Blob(
      const std::string& digest) override {
    auto it = paths_.find(digest);
    std::string path;
    if (it != paths_.end()) {
      path = it->second;
    } else {
      auto p = BlobPath(dir_, digest);
      if (!p.ok()) return p.status();
      path = *p;
    }
    auto f = blockstore::OpenLocalFile(path);
    if (!f.ok()) {
      return absl::Status(f.status().code(),
                          absl::StrCat(name_, ": layer blob ", digest, ": ", f.status().message()));
    }
    return f;
  }

 protected:
  std::string dir_, tag_, name_;
  std::map<std::string, std::string> paths_;  // digest -> file, docker archives only
};

// ---- docker save archive: manifest.json + config + layer tars, a Docker v2 manifest made up
// from them ----

class DockerArchiveSource : public OciLayoutSource {
 public:
  using OciLayoutSource::OciLayoutSource;

  absl::Status Load() {
    auto text = ReadWholeFile(dir_ + "/manifest.json", blockstore::kMaxManifestBytes);
    if (!text.ok()) {
      return absl::Status(text.status().code(),
                          absl::StrCat(name_, ": not a docker archive: ", text.status().message()));
    }
    json j = json::parse(*text, nullptr, /*allow_exceptions=*/false);
    if (!j.is_array() || j.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(name_, ": manifest.json is not a non-empty array"));
    }
    const json* pick = nullptr;
    if (tag_.empty()) {
      if (j.size() != 1) {
        return absl::InvalidArgumentError(
            absl::StrCat(name_, ": holds ", j.size(), " images; name one with :REF"));
      }
      pick = &j[0];
    } else {
      for (const auto& e : j) {
        if (!e.is_object() || !e.contains("RepoTags") || !e["RepoTags"].is_array()) continue;
        for (const auto& t : e["RepoTags"]) {
          if (t.is_string() &&
              (t.get<std::string>() == tag_ || t.get<std::string>() == tag_ + ":latest")) {
            pick = &e;
          }
        }
      }
      if (pick == nullptr) {
        return absl::NotFoundError(absl::StrCat(name_, ": no image named \"", tag_, "\""));
      }
    }
    if (!pick->is_object() || !pick->contains("Config") || !(*pick)["Config"].is_string() ||
        !pick->contains("Layers") || !(*pick)["Layers"].is_array()) {
      return absl::InvalidArgumentError(
          absl::StrCat(name_, ": manifest.json entry lacks Config or Layers"));
    }
    blockstore::ImageManifest m;
    m.media_type = std::string(blockstore::kDockerManifestMediaType);
    auto add = [&](const json& name, blockstore::Descriptor* d) -> absl::Status {
      if (!name.is_string())
        return absl::InvalidArgumentError(name_ + ": bad path in manifest.json");
      std::string rel = name.get<std::string>();
      if (rel.empty() || rel[0] == '/' || absl::StrContains(rel, "..")) {
        return absl::InvalidArgumentError(absl::StrCat(name_, ": bad path \"", rel, "\""));
      }
      std::string path = dir_ + "/" + rel;
      auto f = blockstore::OpenLocalFile(path);
      if (!f.ok()) {
        return absl::Status(f.status().code(),
                            absl::StrCat(name_, ": ", rel, ": ", f.status().message()));
      }
      auto digest = blockstore::Sha256DigestOfFile(**f);
      if (!digest.ok()) return digest.status();
      d->digest = *digest;
      d->size = static_cast<int64_t>((*f)->Size());
      paths_[*digest] = path;
      return absl::OkStatus();
    };
    m.config.media_type = std::string(blockstore::kDockerConfigMediaType);
    if (absl::Status s = add((*pick)["Config"], &m.config); !s.ok()) return s;
    for (const auto& l : (*pick)["Layers"]) {
      blockstore::Descriptor d;
      d.media_type = "application/vnd.docker.image.rootfs.diff.tar";
      if (absl::Status s = add(l, &d); !s.ok()) return s;
      m.layers.push_back(std::move(d));
    }
    manifest_.media_type = m.media_type;
    manifest_.body = blockstore::SerializeImageManifest(m);
    manifest_.digest = blockstore::Sha256Digest(manifest_.body);
    return absl::OkStatus();
  }

  absl::StatusOr<ManifestDocument> TopManifest() override { return manifest_; }
  absl::StatusOr<ManifestDocument> Manifest(const std::string& digest) override {
    if (digest == manifest_.digest) return manifest_;
    return absl::NotFoundError(absl::StrCat(name_, ": no manifest ", digest));
  }
  absl::StatusOr<std::string> SmallBlob(const std::string& digest) override {
    auto it = paths_.find(digest);
    if (it == paths_.end()) return absl::NotFoundError(absl::StrCat(name_, ": no blob ", digest));
    return ReadWholeFile(it->second, kMaxSmallBlob);
  }

 private:
  ManifestDocument manifest_;
};

// ---- registry ----

class RegistrySource : public ImageSource {
 public:
  RegistrySource(blockstore::Reference ref, std::shared_ptr<blockstore::RegistryClient> client,
                 std::string work_dir)
      : ref_(std::move(ref)), client_(std::move(client)), work_dir_(std::move(work_dir)) {}

  absl::StatusOr<ManifestDocument> TopManifest() override {
    auto m = client_->GetManifest(ref_);
    if (!m.ok()) return m.status();
    return ManifestDocument{m->media_type, m->digest, m->body};
  }
  absl::StatusOr<ManifestDocument> Manifest(const std::string& digest) override {
    blockstore::Reference r = ref_;
    r.digest = digest;
    auto m = client_->GetManifest(r);
    if (!m.ok()) return m.status();
    return ManifestDocument{m->media_type, m->digest, m->body};
  }
  absl::StatusOr<std::string> SmallBlob(const std::string& digest) override {
    return client_->GetBlob(ref_, digest);
  }
  absl::StatusOr<std::unique_ptr<blockstore::RandomAccessFile>> Blob(
      const std::string& digest) override {
    if (absl::Status s = blockstore::CheckDigest(digest, "layer digest"); !s.ok()) return s;
    std::string path = absl::StrCat(work_dir_, "/download-", digest.substr(digest.find(':') + 1));
    auto out = blockstore::CreateLocalFile(path);
    if (!out.ok()) return out.status();
    blockstore::Sha256 sha;
    absl::Status s = client_->FetchBlob(ref_, digest, 0, [&](absl::string_view data) {
      sha.Update(data);
      return (*out)->Append(data);
    });
    if (s.ok()) s = (*out)->Close();
    if (!s.ok()) return s;
    std::string got = sha.Finish();
    if (got != digest) {
      return absl::DataLossError(
          absl::StrCat(ref_.String(), ": layer ", digest, " has content digest ", got));
    }
    return blockstore::OpenLocalFile(path);
  }
  std::optional<blockstore::Reference> Registry() const override { return ref_; }

 private:
  blockstore::Reference ref_;
  std::shared_ptr<blockstore::RegistryClient> client_;
  std::string work_dir_;
};

// ---- destinations ----

class OciLayoutDestination : public ImageDestination {
 public:
  OciLayoutDestination(std::string dir, std::string tag)
      : dir_(std::move(dir)), tag_(std::move(tag)) {}

  absl::StatusOr<PushOutcome> PutBlob(const std::string& digest, const std::string& local_path,
                                      const std::string&) override {
    auto path = BlobPath(dir_, digest);
    if (!path.ok()) return path.status();
    if (fs::exists(*path)) return PushOutcome::kAlreadyExists;
    std::error_code ec;
    fs::create_directories(fs::path(*path).parent_path(), ec);
    std::string tmp = *path + ".tmp";
    ::unlink(tmp.c_str());
    if (::link(local_path.c_str(), tmp.c_str()) != 0) {
      if (absl::Status s = CopyFile(local_path, tmp); !s.ok()) return s;
    }
    if (::rename(tmp.c_str(), path->c_str()) != 0) return ErrnoError("rename", tmp);
    return PushOutcome::kUploaded;
  }
  absl::StatusOr<PushOutcome> PutSmallBlob(const std::string& digest,
                                           const std::string& data) override {
    auto path = BlobPath(dir_, digest);
    if (!path.ok()) return path.status();
    if (fs::exists(*path)) return PushOutcome::kAlreadyExists;
    std::error_code ec;
    fs::create_directories(fs::path(*path).parent_path(), ec);
    if (absl::Status s = WriteFileAtomically(*path, data); !s.ok()) return s;
    return PushOutcome::kUploaded;
  }
  absl::Status PutManifest(const ManifestDocument& doc) override {
    return PutSmallBlob(doc.digest, doc.body).status();
  }
  absl::Status PutTopManifest(const ManifestDocument& doc) override {
    if (absl::Status s = PutManifest(doc); !s.ok()) return s;
    top_ = doc;
    return absl::OkStatus();
  }
  absl::Status Commit() override {
    std::error_code ec;
    fs::create_directories(dir_, ec);
    blockstore::ImageIndex index;
    index.media_type = std::string(blockstore::kOciIndexMediaType);
    if (fs::exists(dir_ + "/index.json")) {
      auto body = ReadWholeFile(dir_ + "/index.json", blockstore::kMaxManifestBytes);
      if (!body.ok()) return body.status();
      auto old = blockstore::ParseImageIndex(*body);
      if (!old.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(dir_, "/index.json: ", old.status().message()));
      }
      for (auto& d : old->manifests) {
        auto it = d.annotations.find(std::string(kRefNameAnnotation));
        // An untagged image is replaced by an untagged one; a tag moves to the new image.
        bool same = tag_.empty() ? it == d.annotations.end()
                                 : it != d.annotations.end() && it->second == tag_;
        if (!same) index.manifests.push_back(std::move(d));
      }
    }
    blockstore::Descriptor d;
    d.media_type = top_.media_type;
    d.digest = top_.digest;
    d.size = static_cast<int64_t>(top_.body.size());
    if (!tag_.empty()) d.annotations[std::string(kRefNameAnnotation)] = tag_;
    index.manifests.push_back(std::move(d));
    if (absl::Status s =
            WriteFileAtomically(dir_ + "/oci-layout", R"({"imageLayoutVersion":"1.0.0"})");
        !s.ok()) {
      return s;
    }
    return WriteFileAtomically(dir_ + "/index.json", blockstore::SerializeImageIndex(index));
  }

 protected:
  std::string dir_, tag_;
  ManifestDocument top_;
};

class OciArchiveDestination : public OciLayoutDestination {
 public:
  OciArchiveDestination(std::string layout_dir, std::string tag, std::string archive)
      : OciLayoutDestination(std::move(layout_dir), std::move(tag)), archive_(std::move(archive)) {}
  absl::Status Commit() override {
    if (absl::Status s = OciLayoutDestination::Commit(); !s.ok()) return s;
    return TarDirectory(dir_, archive_);
  }

 private:
  std::string archive_;
};

// A `docker save` tarball: manifest.json ([{"Config", "RepoTags", "Layers"}]), the config as
// <hex>.json and each layer blob as <hex>/layer.tar. Blobs are staged as an OCI layout in
// `stage_dir` and packed at Commit. One image only: a docker archive has no index (pick a
// platform with --platform) and no place for manifest or layer annotations, so a converted
// image read back from it is found by its layer digests alone.
class DockerArchiveDestination : public OciLayoutDestination {
 public:
  DockerArchiveDestination(std::string stage_dir, std::string tag, std::string archive)
      : OciLayoutDestination(std::move(stage_dir), std::move(tag)), archive_(std::move(archive)) {}

  absl::Status Commit() override {
    const std::string name = absl::StrCat("docker-archive:", archive_);
    std::string body = top_.body;
    if (top_.media_type == blockstore::kOciIndexMediaType ||
        top_.media_type == blockstore::kDockerManifestListMediaType) {
      // An index of one platform (--platform) stands for its manifest.
      auto index = blockstore::ParseImageIndex(top_.body);
      if (!index.ok()) return index.status();
      if (index->manifests.size() != 1) {
        return absl::InvalidArgumentError(absl::StrCat(name, ": holds one image, the index has ",
                                                       index->manifests.size(),
                                                       " platforms; choose one with --platform"));
      }
      auto path = BlobPath(dir_, index->manifests[0].digest);
      if (!path.ok()) return path.status();
      auto child = ReadWholeFile(*path, blockstore::kMaxManifestBytes);
      if (!child.ok()) return child.status();
      body = *std::move(child);
    }
    auto m = blockstore::ParseImageManifest(body);
    if (!m.ok()) return m.status();
    const std::string out = dir_ + ".archive";
    std::error_code ec;
    fs::remove_all(out, ec);
    fs::create_directories(out, ec);
    if (ec) return absl::InternalError(absl::StrCat("mkdir ", out, ": ", ec.message()));
    // Hard links into the staging layout (a copy across file systems).
    auto place = [&](const std::string& digest, const std::string& rel) -> absl::Status {
      auto from = BlobPath(dir_, digest);
      if (!from.ok()) return from.status();
      fs::create_directories(fs::path(out + "/" + rel).parent_path(), ec);
      if (::link(from->c_str(), (out + "/" + rel).c_str()) == 0) return absl::OkStatus();
      return CopyFile(*from, out + "/" + rel);
    };
    auto hex = [](const std::string& digest) { return digest.substr(digest.find(':') + 1); };
    const std::string config_rel = hex(m->config.digest) + ".json";
    json entry = {{"Config", config_rel}, {"Layers", json::array()}};
    if (absl::Status s = place(m->config.digest, config_rel); !s.ok()) return s;
    for (const blockstore::Descriptor& l : m->layers) {
      std::string rel = hex(l.digest) + "/layer.tar";
      if (absl::Status s = place(l.digest, rel); !s.ok()) return s;
      entry["Layers"].push_back(rel);
    }
    if (!tag_.empty()) {
      // docker load wants repo:tag; a bare name means :latest, as for docker tag.
      size_t slash = tag_.rfind('/');
      bool has_tag = tag_.find(':', slash == std::string::npos ? 0 : slash) != std::string::npos;
      entry["RepoTags"] = json::array({has_tag ? tag_ : tag_ + ":latest"});
    }
    if (absl::Status s = WriteFileAtomically(out + "/manifest.json", json::array({entry}).dump());
        !s.ok()) {
      return s;
    }
    return TarDirectory(out, archive_);
  }

 private:
  std::string archive_;
};

class RegistryDestination : public ImageDestination {
 public:
  RegistryDestination(blockstore::Reference ref, std::shared_ptr<blockstore::RegistryClient> client)
      : ref_(std::move(ref)), client_(std::move(client)) {}

  absl::StatusOr<PushOutcome> PutBlob(const std::string& digest, const std::string& local_path,
                                      const std::string& mount_from) override {
    auto f = blockstore::OpenLocalFile(local_path);
    if (!f.ok()) return f.status();
    blockstore::PushBlobOptions opts;
    opts.chunk_size = 0;
    if (mount_from != ref_.repository) opts.mount_from = mount_from;
    return client_->PushBlob(ref_, digest, **f, opts);
  }
  absl::StatusOr<PushOutcome> PutSmallBlob(const std::string& digest,
                                           const std::string& data) override {
    auto f = blockstore::NewMemoryFile(data, digest);
    return client_->PushBlob(ref_, digest, *f);
  }
  absl::Status PutManifest(const ManifestDocument& doc) override {
    blockstore::Reference r = ref_;
    r.tag.clear();
    r.digest = doc.digest;
    return client_->PutManifest(r, doc.media_type, doc.body).status();
  }
  absl::Status PutTopManifest(const ManifestDocument& doc) override {
    blockstore::Reference r = ref_;
    r.digest.clear();
    if (r.tag.empty()) r.digest = doc.digest;
    return client_->PutManifest(r, doc.media_type, doc.body).status();
  }
  absl::Status Commit() override { return absl::OkStatus(); }
  std::string Repository() const override { return ref_.registry + "/" + ref_.repository; }

 private:
  blockstore::Reference ref_;
  std::shared_ptr<blockstore::RegistryClient> client_;
};

}  // namespace

absl::Status WriteFileAtomically(const std::string& path, absl::string_view data) {
  std::string tmp = path + ".tmp";
  auto f = blockstore::CreateLocalFile(tmp);
  if (!f.ok()) return f.status();
  absl::Status s = (*f)->Append(data);
  if (s.ok()) s = (*f)->Close();
  if (!s.ok()) return s;
  if (::rename(tmp.c_str(), path.c_str()) != 0) return ErrnoError("rename", tmp);
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadWholeFile(const std::string& path, size_t max_bytes) {
  auto f = blockstore::OpenLocalFile(path);
  if (!f.ok()) return f.status();
  if ((*f)->Size() > max_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", (*f)->Size(), " bytes, more than ", max_bytes));
  }
  std::string data((*f)->Size(), '\0');
  if (absl::Status s = blockstore::PreadExact(**f, 0, data.size(), data.data(), "contents");
      !s.ok()) {
    return s;
  }
  return data;
}

absl::Status TarDirectory(const std::string& dir, const std::string& tar_path) {
  std::vector<fs::path> entries;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    entries.push_back(it->path());
  }
  if (ec) return absl::InternalError(absl::StrCat("walk ", dir, ": ", ec.message()));
  std::sort(entries.begin(), entries.end());
  if (fs::path parent = fs::path(tar_path).parent_path(); !parent.empty()) {
    fs::create_directories(parent, ec);
  }
  struct archive* a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  std::string tmp = tar_path + ".tmp";
  if (archive_write_open_filename(a, tmp.c_str()) != ARCHIVE_OK) {
    absl::Status s = absl::InternalError(absl::StrCat(tmp, ": ", archive_error_string(a)));
    archive_write_free(a);
    return s;
  }
  absl::Status status;
  std::vector<char> buf(1 << 20);
  for (const auto& p : entries) {
    std::string rel = fs::relative(p, dir).string();
    struct archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, rel.c_str());
    bool is_dir = fs::is_directory(p);
    archive_entry_set_filetype(e, is_dir ? AE_IFDIR : AE_IFREG);
    archive_entry_set_perm(e, is_dir ? 0755 : 0644);
    uint64_t size = is_dir ? 0 : fs::file_size(p);
    archive_entry_set_size(e, static_cast<la_int64_t>(size));
    archive_entry_set_mtime(e, 0, 0);
    if (archive_write_header(a, e) != ARCHIVE_OK) {
      status = absl::InternalError(absl::StrCat(tar_path, ": ", archive_error_string(a)));
    }
    archive_entry_free(e);
    if (!status.ok()) break;
    if (!is_dir) {
      std::ifstream in(p, std::ios::binary);
      while (in) {
        in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
        std::streamsize n = in.gcount();
        if (n > 0 && archive_write_data(a, buf.data(), static_cast<size_t>(n)) != n) {
          status = absl::InternalError(absl::StrCat(tar_path, ": ", archive_error_string(a)));
          break;
        }
      }
    }
    if (!status.ok()) break;
  }
  if (archive_write_close(a) != ARCHIVE_OK && status.ok()) {
    status = absl::InternalError(absl::StrCat(tar_path, ": ", archive_error_string(a)));
  }
  archive_write_free(a);
  if (!status.ok()) return status;
  if (::rename(tmp.c_str(), tar_path.c_str()) != 0) return ErrnoError("rename", tmp);
  return absl::OkStatus();
}

absl::Status UntarToDirectory(const std::string& tar_path, const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  struct archive* a = archive_read_new();
  archive_read_support_format_tar(a);
  archive_read_support_filter_all(a);
  if (archive_read_open_filename(a, tar_path.c_str(), 1 << 20) != ARCHIVE_OK) {
    absl::Status s =
        absl::InvalidArgumentError(absl::StrCat(tar_path, ": ", archive_error_string(a)));
    archive_read_free(a);
    return s;
  }
  absl::Status status;
  struct archive_entry* e;
  std::vector<char> buf(1 << 20);
  while (true) {
    int r = archive_read_next_header(a, &e);
    if (r == ARCHIVE_EOF) break;
    if (r != ARCHIVE_OK) {
      status = absl::InvalidArgumentError(absl::StrCat(tar_path, ": ", archive_error_string(a)));
      break;
    }
    // Lexically cleaned, relative; anything climbing out is refused.
    fs::path rel = fs::path(archive_entry_pathname(e)).lexically_normal().relative_path();
    std::string rs = rel.string();
    if (rs.empty() || rs == "." || absl::StartsWith(rs, "..")) continue;
    fs::path out = fs::path(dir) / rel;
    if (archive_entry_filetype(e) == AE_IFDIR) {
      fs::create_directories(out, ec);
      continue;
    }
    if (archive_entry_filetype(e) != AE_IFREG) continue;  // layouts hold only files
    fs::create_directories(out.parent_path(), ec);
    std::ofstream o(out, std::ios::binary | std::ios::trunc);
    la_ssize_t n;
    while ((n = archive_read_data(a, buf.data(), buf.size())) > 0) {
      o.write(buf.data(), n);
    }
    if (n < 0) {
      status = absl::InvalidArgumentError(absl::StrCat(tar_path, ": ", archive_error_string(a)));
      break;
    }
    if (!o) {
      status = absl::InternalError(absl::StrCat("write ", out.string()));
      break;
    }
  }
  archive_read_free(a);
  return status;
}

absl::StatusOr<std::unique_ptr<ImageSource>> OpenImageSource(
    const ImageReference& ref, std::shared_ptr<blockstore::RegistryClient> client,
    const std::string& work_dir) {
  switch (ref.transport) {
    case Transport::kDocker:
      if (client == nullptr) return absl::InvalidArgumentError("no registry client");
      return std::make_unique<RegistrySource>(ref.registry, std::move(client), work_dir);
    case Transport::kOciLayout:
      if (!fs::is_directory(ref.path)) {
        return absl::NotFoundError(absl::StrCat(ref.String(), ": no such directory"));
      }
      return std::make_unique<OciLayoutSource>(ref.path, ref.tag, ref.String());
    case Transport::kOciArchive: {
      std::string dir = work_dir + "/source-oci";
      if (absl::Status s = UntarToDirectory(ref.path, dir); !s.ok()) return s;
      return std::make_unique<OciLayoutSource>(dir, ref.tag, ref.String());
    }
    case Transport::kDockerArchive: {
      std::string dir = work_dir + "/source-docker";
      if (absl::Status s = UntarToDirectory(ref.path, dir); !s.ok()) return s;
      auto src = std::make_unique<DockerArchiveSource>(dir, ref.tag, ref.String());
      if (absl::Status s = src->Load(); !s.ok()) return s;
      return src;
    }
  }
  return absl::InvalidArgumentError("unknown transport");
}

absl::StatusOr<std::unique_ptr<ImageDestination>> OpenImageDestination(
    const ImageReference& ref, std::shared_ptr<blockstore::RegistryClient> client,
    const std::string& work_dir) {
  switch (ref.transport) {
    case Transport::kDocker:
      if (client == nullptr) return absl::InvalidArgumentError("no registry client");
      return std::make_unique<RegistryDestination>(ref.registry, std::move(client));
    case Transport::kOciLayout:
      return std::make_unique<OciLayoutDestination>(ref.path, ref.tag);
    case Transport::kOciArchive:
      return std::make_unique<OciArchiveDestination>(work_dir + "/dest-oci", ref.tag, ref.path);
    case Transport::kDockerArchive:
      return std::make_unique<DockerArchiveDestination>(work_dir + "/dest-docker", ref.tag,
                                                        ref.path);
  }
  return absl::InvalidArgumentError("unknown transport");
}

}  // namespace dadi::converter::image
