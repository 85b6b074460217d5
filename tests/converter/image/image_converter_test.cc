// converter/image with a fake layer converter (a deterministic blob derived from its inputs):
// every transport, the manifest/config rewrite, two-platform indexes, skip-existing and
// cross-mount against a real docker-registry, determinism, dedup and bad inputs.
#include <archive.h>
#include <archive_entry.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "blockstore/remote/digest.h"
#include "blockstore/remote/manifest.h"
#include "blockstore/remote/registry_client.h"
#include "converter/image/dedup_db.h"
#include "converter/image/image_converter.h"
#include "converter/image/image_reference.h"
#include "converter/image/image_store.h"
#include "nlohmann/json.hpp"
#include "tests/remote/test_servers.h"
#include "tests/support/scratch_dir.h"

namespace dadi::converter::image {
namespace {

namespace fs = std::filesystem;
using blockstore::Descriptor;
using blockstore::ImageIndex;
using blockstore::ImageManifest;
using json = nlohmann::json;
using testing::ScratchDir;

// A tar with one file, made with libarchive (zero times: the same bytes every run).
std::string MakeTar(const std::string& name, const std::string& content) {
  std::vector<char> buf(64 << 10);
  size_t used = 0;
  struct archive* a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  archive_write_open_memory(a, buf.data(), buf.size(), &used);
  struct archive_entry* e = archive_entry_new();
  archive_entry_set_pathname(e, name.c_str());
  archive_entry_set_filetype(e, AE_IFREG);
  archive_entry_set_perm(e, 0644);
  archive_entry_set_size(e, static_cast<la_int64_t>(content.size()));
  archive_write_header(a, e);
  archive_write_data(a, content.data(), content.size());
  archive_entry_free(e);
  archive_write_close(a);
  archive_write_free(a);
  return std::string(buf.data(), used);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Counts calls; writes "fake|<tar digest>|<lowers>|<uuid>|<parent>|<options>" as the blob.
struct FakeLayerConverter {
  std::shared_ptr<std::atomic<int>> calls = std::make_shared<std::atomic<int>>(0);
  std::shared_ptr<std::vector<std::vector<std::string>>> lowers_seen =
      std::make_shared<std::vector<std::vector<std::string>>>();
  LayerConverterFn Fn() {
    auto c = calls;
    auto seen = lowers_seen;
    return
        [c, seen](blockstore::RandomAccessFile& tar, const std::vector<std::string>& lowers,
                  const std::string& uuid, const std::string& parent, const std::string& out_path,
                  const LayerOptions& o) -> absl::StatusOr<LayerResult> {
          ++*c;
          seen->push_back(lowers);
          auto digest = blockstore::Sha256DigestOfFile(tar);
          if (!digest.ok()) return digest.status();
          std::vector<std::string> lower_digests;
          for (const auto& l : lowers) lower_digests.push_back(fs::path(l).filename().string());
          std::string blob = absl::StrCat("fake|", *digest, "|", absl::StrJoin(lower_digests, ","),
                                          "|", uuid, "|", parent, "|", o.Key());
          if (absl::Status s = WriteFileAtomically(out_path, blob); !s.ok()) return s;
          return LayerResult{out_path, blockstore::Sha256Digest(blob), blob.size(), uuid};
        };
  }
};

// Writes an OCI layout: blobs and index.json.
class LayoutBuilder {
 public:
  explicit LayoutBuilder(std::string dir) : dir_(std::move(dir)) {
    fs::create_directories(dir_ + "/blobs/sha256");
  }
  Descriptor Blob(const std::string& data, const std::string& media_type) {
    Descriptor d;
    d.media_type = media_type;
    d.digest = blockstore::Sha256Digest(data);
    d.size = static_cast<int64_t>(data.size());
    std::ofstream(dir_ + "/blobs/sha256/" + d.digest.substr(7), std::ios::binary) << data;
    return d;
  }
  // An image of tar layers with the given file contents; config with history incl. an empty
  // layer entry and an extra field.
  Descriptor Image(const std::vector<std::string>& contents, const std::string& arch = "amd64",
                   bool docker = false) {
    ImageManifest m;
    m.media_type = std::string(docker ? blockstore::kDockerManifestMediaType
                                      : blockstore::kOciManifestMediaType);
    json config = {{"architecture", arch},
                   {"os", "linux"},
                   {"config", {{"Env", {"PATH=/bin"}}}},
                   {"rootfs", {{"type", "layers"}, {"diff_ids", json::array()}}},
                   {"history", json::array()}};
    for (size_t i = 0; i < contents.size(); ++i) {
      std::string tar = MakeTar("file" + std::to_string(i), contents[i]);
      Descriptor l = Blob(
          tar, std::string(docker ? kDockerLayerTarMediaType : blockstore::kOciLayerMediaType));
      l.annotations["org.example.kept"] = "yes";
      m.layers.push_back(l);
      config["rootfs"]["diff_ids"].push_back(l.digest);
      config["history"].push_back({{"created_by", "ADD file" + std::to_string(i)}});
    }
    config["history"].push_back({{"created_by", "ENV X=1"}, {"empty_layer", true}});
    m.config = Blob(config.dump(), std::string(docker ? blockstore::kDockerConfigMediaType
                                                      : blockstore::kOciConfigMediaType));
    Descriptor d = Blob(blockstore::SerializeImageManifest(m), m.media_type);
    d.platform = blockstore::Platform{arch, "linux", "", "", {}};
    return d;
  }
  Descriptor Index(const std::vector<Descriptor>& manifests) {
    ImageIndex idx;
    idx.media_type = std::string(blockstore::kOciIndexMediaType);
    idx.manifests = manifests;
    return Blob(blockstore::SerializeImageIndex(idx), idx.media_type);
  }
  void Tag(Descriptor d, const std::string& tag) {
    d.annotations["org.opencontainers.image.ref.name"] = tag;
    d.platform.reset();
    index_.manifests.push_back(d);
    index_.media_type = std::string(blockstore::kOciIndexMediaType);
    std::ofstream(dir_ + "/index.json") << blockstore::SerializeImageIndex(index_);
    std::ofstream(dir_ + "/oci-layout") << R"({"imageLayoutVersion":"1.0.0"})";
  }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  ImageIndex index_;
};

class ImageConverterTest : public ::testing::Test {
 protected:
  absl::StatusOr<ConvertSummary> Run(const std::string& src, const std::string& dst,
                                     const std::string& db_name = "convert.db",
                                     std::shared_ptr<blockstore::RegistryClient> client = nullptr,
                                     std::optional<blockstore::Platform> platform = {}) {
    auto s = ParseImageReference(src);
    if (!s.ok()) return s.status();
    auto d = ParseImageReference(dst);
    if (!d.ok()) return d.status();
    std::string work = dir_.Join("work" + std::to_string(runs_++));
    fs::create_directories(work);
    auto db = DedupDb::Open(dir_.Join(db_name));
    if (!db.ok()) return db.status();
    auto source = OpenImageSource(*s, client, work);
    if (!source.ok()) return source.status();
    auto dest = OpenImageDestination(*d, client, work);
    if (!dest.ok()) return dest.status();
    ConvertOptions o;
    o.store_dir = dir_.Join(db_name + ".blobs");
    o.work_dir = work;
    o.platform = platform;
    ImageConverter c(o, fake_.Fn(), db->get(), nullptr);
    return c.Convert(**source, **dest);
  }
  // The top manifest of an OCI layout written by a conversion.
  static ManifestDocument Top(const std::string& layout, const std::string& tag = "") {
    auto ref = ParseImageReference(absl::StrCat("oci:", layout, tag.empty() ? "" : ":", tag));
    EXPECT_TRUE(ref.ok());
    auto src = OpenImageSource(*ref, nullptr, layout);
    EXPECT_TRUE(src.ok()) << src.status();
    auto top = (*src)->TopManifest();
    EXPECT_TRUE(top.ok()) << top.status();
    return top.ok() ? *top : ManifestDocument{};
  }
  static std::string BlobOf(const std::string& layout, const std::string& digest) {
    return ReadFile(layout + "/blobs/sha256/" + digest.substr(7));
  }

  ScratchDir dir_{"converter-image"};
  FakeLayerConverter fake_;
  int runs_ = 0;
};

TEST(ImageReferenceTest, Transports) {
  auto r = ParseImageReference("docker://127.0.0.1:5000/a/b:v1");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->transport, Transport::kDocker);
  EXPECT_EQ(r->registry.registry, "127.0.0.1:5000");
  EXPECT_EQ(r->registry.repository, "a/b");
  EXPECT_EQ(r->registry.tag, "v1");
  r = ParseImageReference("oci:/tmp/x:latest");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->transport, Transport::kOciLayout);
  EXPECT_EQ(r->path, "/tmp/x");
  EXPECT_EQ(r->tag, "latest");
  r = ParseImageReference("oci:/tmp/x");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->tag, "");
  r = ParseImageReference("oci-archive:/tmp/a.tar:v2");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->transport, Transport::kOciArchive);
  EXPECT_EQ(r->path, "/tmp/a.tar");
  EXPECT_EQ(r->tag, "v2");
  r = ParseImageReference("docker-archive:/tmp/s.tar:busybox:1.36");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->transport, Transport::kDockerArchive);
  EXPECT_EQ(r->path, "/tmp/s.tar");
  EXPECT_EQ(r->tag, "busybox:1.36");

  r = ParseImageReference("ftp://x/y");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(r.status().message(), "unknown transport \"ftp\"")) << r.status();
  EXPECT_FALSE(ParseImageReference("/just/a/path").ok());
  EXPECT_FALSE(ParseImageReference("oci:").ok());
  EXPECT_FALSE(ParseImageReference("docker:/x").ok());
  EXPECT_FALSE(ParseImageReference("docker://UPPER/Case").ok());
}

TEST(ImageConverterHelpersTest, ChainIdsAndUuids) {
  std::string a = blockstore::Sha256Digest("a"), b = blockstore::Sha256Digest("b");
  auto ids = ChainIds({a, b});
  ASSERT_EQ(ids.size(), 2u);
  EXPECT_EQ(ids[0], a);
  EXPECT_EQ(ids[1], blockstore::Sha256Digest(a + " " + b));
  std::string u = DeterministicUuid("x");
  EXPECT_EQ(u, DeterministicUuid("x"));
  EXPECT_NE(u, DeterministicUuid("y"));
  ASSERT_EQ(u.size(), 36u);
  EXPECT_EQ(u[8], '-');
  EXPECT_EQ(u[14], '5');
}

TEST_F(ImageConverterTest, OciLayoutRewritesManifestAndConfig) {
  LayoutBuilder src(dir_.Join("src"));
  src.Tag(src.Image({"base", "app"}), "v1");
  auto sum = Run("oci:" + src.dir() + ":v1", "oci:" + dir_.Join("dst") + ":conv");
  ASSERT_TRUE(sum.ok()) << sum.status();
  EXPECT_EQ(sum->layers, 2);
  EXPECT_EQ(*fake_.calls, 2);
  EXPECT_EQ(sum->pushes.uploaded, 2u);

  ManifestDocument top = Top(dir_.Join("dst"), "conv");
  EXPECT_EQ(top.digest, sum->digest);
  auto m = blockstore::ParseImageManifest(top.body);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(m->layers.size(), 2u);
  auto config = json::parse(BlobOf(dir_.Join("dst"), m->config.digest));
  for (size_t i = 0; i < 2; ++i) {
    const Descriptor& l = m->layers[i];
    EXPECT_EQ(l.media_type, blockstore::kOciLayerMediaType);
    std::string blob = BlobOf(dir_.Join("dst"), l.digest);
    EXPECT_TRUE(absl::StartsWith(blob, "fake|")) << blob;
    EXPECT_EQ(blockstore::Sha256Digest(blob), l.digest);
    EXPECT_EQ(l.size, static_cast<int64_t>(blob.size()));
    EXPECT_EQ(l.annotations.at(std::string(kOverlaybdDigestAnnotation)), l.digest);
    EXPECT_EQ(l.annotations.at(std::string(kOverlaybdSizeAnnotation)), std::to_string(blob.size()));
    EXPECT_EQ(l.annotations.at(std::string(kOverlaybdVersionAnnotation)), "0.1.0");
    EXPECT_EQ(l.annotations.count(std::string(kDadiRepositoryAnnotation)), 0u);
    EXPECT_EQ(l.annotations.at("org.example.kept"), "yes");
    EXPECT_EQ(config["rootfs"]["diff_ids"][i], l.digest);
  }
  // Layer 2 was applied on layer 1's blob, with layer 1's uuid as parent.
  ASSERT_EQ(fake_.lowers_seen->size(), 2u);
  EXPECT_TRUE((*fake_.lowers_seen)[0].empty());
  ASSERT_EQ((*fake_.lowers_seen)[1].size(), 1u);
  std::string blob1 = BlobOf(dir_.Join("dst"), m->layers[0].digest);
  std::string blob2 = BlobOf(dir_.Join("dst"), m->layers[1].digest);
  EXPECT_TRUE(absl::StrContains(blob2, m->layers[0].digest.substr(7)));
  std::vector<std::string> f1 = absl::StrSplit(blob1, '|'), f2 = absl::StrSplit(blob2, '|');
  EXPECT_EQ(f2[4], f1[3]);  // parent uuid of layer 2 = uuid of layer 1
  EXPECT_EQ(f1[4], "");
  // Config: history (incl. the empty layer) and other fields kept.
  ASSERT_EQ(config["history"].size(), 3u);
  EXPECT_EQ(config["history"][2]["empty_layer"], true);
  EXPECT_EQ(config["config"]["Env"][0], "PATH=/bin");
  EXPECT_EQ(config["architecture"], "amd64");
}

TEST_F(ImageConverterTest, PlainProgressAndJsonSummary) {
  LayoutBuilder src(dir_.Join("src"));
  src.Tag(src.Image({"base", "app"}), "v1");
  auto s = ParseImageReference("oci:" + src.dir() + ":v1");
  auto d = ParseImageReference("oci:" + dir_.Join("dst"));
  auto source = OpenImageSource(*s, nullptr, dir_.path());
  auto dest = OpenImageDestination(*d, nullptr, dir_.path());
  char* text = nullptr;
  size_t len = 0;
  FILE* out = open_memstream(&text, &len);
  ASSERT_NE(out, nullptr);
  auto progress = NewPlainProgress(out);
  ConvertOptions o;
  o.store_dir = dir_.Join("blobs");
  o.work_dir = dir_.path();
  ImageConverter conv(o, fake_.Fn(), nullptr, progress.get());
  auto sum = conv.Convert(**source, **dest);
  std::fclose(out);
  std::string lines(text, len);
  std::free(text);
  ASSERT_TRUE(sum.ok()) << sum.status();
  EXPECT_TRUE(absl::StrContains(lines, "layer 1/2 sha256:")) << lines;
  EXPECT_TRUE(absl::StrContains(lines, "applying")) << lines;
  EXPECT_TRUE(absl::StrContains(lines, "layer 2/2")) << lines;
  EXPECT_TRUE(absl::StrContains(lines, "done")) << lines;
  EXPECT_TRUE(absl::StrContains(lines, "(uploaded)")) << lines;
  auto j = json::parse(sum->ToJson());
  EXPECT_EQ(j["layers"], 2);
  EXPECT_EQ(j["digest"], sum->digest);
  EXPECT_EQ(j["bytes_in"], sum->bytes_in);
  EXPECT_GT(j["bytes_out"].get<uint64_t>(), 0u);
  EXPECT_EQ(j["blobs_uploaded"], 2);
}

// Wraps a destination: the first layer's upload waits until the second layer is being applied
// (the pipeline overlaps them), or fails when asked to.
class GatedDestination : public ImageDestination {
 public:
  GatedDestination(std::unique_ptr<ImageDestination> inner, std::shared_ptr<std::atomic<int>> calls,
                   bool fail)
      : inner_(std::move(inner)), calls_(std::move(calls)), fail_(fail) {}
  absl::StatusOr<blockstore::PushOutcome> PutBlob(const std::string& digest,
                                                  const std::string& path,
                                                  const std::string& mount_from) override {
    if (fail_) return absl::UnavailableError("registry went away");
    if (puts_++ == 0) {
      // Not a timing assertion: the bound only keeps a broken pipeline from hanging the test.
      for (int i = 0; i < 1000 && calls_->load() < 2; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      overlapped_ = calls_->load() >= 2;
    }
    return inner_->PutBlob(digest, path, mount_from);
  }
  absl::StatusOr<blockstore::PushOutcome> PutSmallBlob(const std::string& digest,
                                                       const std::string& data) override {
    return inner_->PutSmallBlob(digest, data);
  }
  absl::Status PutManifest(const ManifestDocument& doc) override {
    return inner_->PutManifest(doc);
  }
  absl::Status PutTopManifest(const ManifestDocument& doc) override {
    return inner_->PutTopManifest(doc);
  }
  absl::Status Commit() override { return inner_->Commit(); }
  bool overlapped() const { return overlapped_; }

 private:
  std::unique_ptr<ImageDestination> inner_;
  std::shared_ptr<std::atomic<int>> calls_;
  bool fail_;
  int puts_ = 0;
  std::atomic<bool> overlapped_{false};
};

TEST_F(ImageConverterTest, UploadOverlapsNextLayerAndFailsCleanly) {
  LayoutBuilder src(dir_.Join("src"));
  src.Tag(src.Image({"base", "app", "top"}), "v1");
  for (bool fail : {false, true}) {
    auto s = ParseImageReference("oci:" + src.dir() + ":v1");
    auto d = ParseImageReference("oci:" + dir_.Join(fail ? "dst-fail" : "dst"));
    auto source = OpenImageSource(*s, nullptr, dir_.path());
    auto inner = OpenImageDestination(*d, nullptr, dir_.path());
    ASSERT_TRUE(inner.ok());
    FakeLayerConverter fake;
    GatedDestination dest(*std::move(inner), fake.calls, fail);
    ConvertOptions o;
    o.store_dir = dir_.Join("blobs");
    o.work_dir = dir_.path();
    ImageConverter conv(o, fake.Fn(), nullptr, nullptr);
    auto sum = conv.Convert(**source, dest);
    if (fail) {
      EXPECT_EQ(sum.status().code(), absl::StatusCode::kUnavailable);
      EXPECT_TRUE(absl::StrContains(sum.status().message(), "upload of layer 1")) << sum.status();
      EXPECT_FALSE(fs::exists(dir_.Join("dst-fail/index.json")));
    } else {
      ASSERT_TRUE(sum.ok()) << sum.status();
      EXPECT_TRUE(dest.overlapped());
      EXPECT_EQ(sum->pushes.uploaded, 3u);
    }
  }
}

// Forwards to a real source and counts layer fetches, and how many ran at once.
class CountingSource : public ImageSource {
 public:
  explicit CountingSource(std::unique_ptr<ImageSource> inner) : inner_(std::move(inner)) {}
  absl::StatusOr<ManifestDocument> TopManifest() override { return inner_->TopManifest(); }
  absl::StatusOr<ManifestDocument> Manifest(const std::string& digest) override {
    return inner_->Manifest(digest);
  }
  absl::StatusOr<std::string> SmallBlob(const std::string& digest) override {
    return inner_->SmallBlob(digest);
  }
  absl::StatusOr<std::unique_ptr<blockstore::RandomAccessFile>> Blob(
      const std::string& digest) override {
    int now = ++active_;
    max_active_ = std::max(max_active_.load(), now);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // a download takes time
    auto blob = inner_->Blob(digest);
    --active_;
    ++fetches_;
    return blob;
  }
  int fetches() const { return fetches_; }
  int max_active() const { return max_active_; }

 private:
  std::unique_ptr<ImageSource> inner_;
  std::atomic<int> active_{0}, max_active_{0}, fetches_{0};
};

TEST_F(ImageConverterTest, NextLayerIsFetchedWhileTheCurrentOneConverts) {
  LayoutBuilder src(dir_.Join("src"));
  src.Tag(src.Image({"base", "app", "top"}), "v1");
  auto db = DedupDb::Open(dir_.Join("prefetch.db"));
  ASSERT_TRUE(db.ok()) << db.status();
  for (int run = 0; run < 2; ++run) {
    auto s = ParseImageReference("oci:" + src.dir() + ":v1");
    auto d = ParseImageReference("oci:" + dir_.Join("dst") + ":x");
    auto inner = OpenImageSource(*s, nullptr, dir_.path());
    ASSERT_TRUE(inner.ok());
    CountingSource source(*std::move(inner));
    auto dest = OpenImageDestination(*d, nullptr, dir_.path());
    ASSERT_TRUE(dest.ok());
    // Layer 1's conversion waits (bounded) for layer 2's fetch to have started.
    bool overlapped = false;
    LayerConverterFn fake = fake_.Fn();
    LayerConverterFn gated = [&](blockstore::RandomAccessFile& tar,
                                 const std::vector<std::string>& lowers, const std::string& uuid,
                                 const std::string& parent, const std::string& out_path,
                                 const LayerOptions& o) {
      if (lowers.empty()) {
        for (int i = 0; i < 1000 && source.fetches() < 2; ++i) {
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        overlapped = source.fetches() >= 2;
      }
      return fake(tar, lowers, uuid, parent, out_path, o);
    };
    ConvertOptions o;
    o.store_dir = dir_.Join("prefetch.db.blobs");
    o.work_dir = dir_.path();
    ImageConverter conv(o, gated, db->get(), nullptr);
    auto sum = conv.Convert(source, **dest);
    ASSERT_TRUE(sum.ok()) << sum.status();
    EXPECT_EQ(source.max_active(), run == 0 ? 1 : 0);
    if (run == 0) {
      EXPECT_TRUE(overlapped);
      EXPECT_EQ(source.fetches(), 3);
    } else {
      // Every layer is in the database: nothing fetched, nothing prefetched.
      EXPECT_EQ(sum->reused, 3);
      EXPECT_EQ(source.fetches(), 0);
    }
  }
}

// A staged fake: `apply` writes "sealed|<tar digest>|<lowers>|<uuid>|<parent>" at the sealed
// path, `compress` (slow: 300 ms) turns it into "blob|<sealed content>|<options>"; both record
// when they ran. `fail_compress` makes the compression of that layer (1-based) fail.
struct StagedFake {
  using Clock = std::chrono::steady_clock;
  struct Times {
    std::mutex mu;
    std::map<std::string, Clock::time_point> apply_start, apply_end, compress_start,
        compress_end;                              // by uuid
    std::vector<std::string> uuids;                // in apply order
    std::vector<std::vector<std::string>> lowers;  // of each apply
    std::vector<std::string> sealed;               // paths written by apply
  };
  std::shared_ptr<Times> t = std::make_shared<Times>();
  int fail_compress = 0;
  std::chrono::milliseconds compress_time{300};

  StagedLayerConverter Get() {
    StagedLayerConverter c;
    auto times = t;
    c.apply = [times](blockstore::RandomAccessFile& tar, const std::vector<std::string>& lowers,
                      const std::string& uuid, const std::string& parent,
                      const std::string& sealed_path, const LayerOptions&) -> absl::Status {
      const auto start = Clock::now();
      auto digest = blockstore::Sha256DigestOfFile(tar);
      if (!digest.ok()) return digest.status();
      std::vector<std::string> contents;
      for (const auto& l : lowers) {
        if (!fs::exists(l)) return absl::NotFoundError("lower " + l + " is gone");
        contents.push_back(blockstore::Sha256Digest(ReadFile(l)));
      }
      std::string sealed = absl::StrCat("sealed|", *digest, "|", absl::StrJoin(contents, ","), "|",
                                        uuid, "|", parent);
      if (absl::Status s = WriteFileAtomically(sealed_path, sealed); !s.ok()) return s;
      std::lock_guard<std::mutex> l(times->mu);
      times->apply_start[uuid] = start;
      times->apply_end[uuid] = Clock::now();
      times->uuids.push_back(uuid);
      times->lowers.push_back(lowers);
      times->sealed.push_back(sealed_path);
      return absl::OkStatus();
    };
    const int fail = fail_compress;
    const auto sleep = compress_time;
    c.compress = [times, fail, sleep](const std::string& sealed_path, const std::string& uuid,
                                      const std::string& out_path,
                                      const LayerOptions& o) -> absl::StatusOr<LayerResult> {
      const auto start = Clock::now();
      std::this_thread::sleep_for(sleep);
      int index = 0;
      {
        std::lock_guard<std::mutex> l(times->mu);
        index = static_cast<int>(std::find(times->uuids.begin(), times->uuids.end(), uuid) -
                                 times->uuids.begin() + 1);
        times->compress_start[uuid] = start;
      }
      if (index == fail) return absl::DataLossError("compressor exploded");
      if (!fs::exists(sealed_path)) return absl::NotFoundError("sealed file " + sealed_path);
      std::string blob = absl::StrCat("blob|", ReadFile(sealed_path), "|", o.Key());
      if (absl::Status s = WriteFileAtomically(out_path, blob); !s.ok()) return s;
      std::lock_guard<std::mutex> l(times->mu);
      times->compress_end[uuid] = Clock::now();
      return LayerResult{out_path, blockstore::Sha256Digest(blob), blob.size(), uuid};
    };
    return c;
  }
};

// Files whose names start with `prefix` anywhere under `dir`.
std::vector<std::string> FilesStartingWith(const std::string& dir, const std::string& prefix) {
  std::vector<std::string> out;
  if (!fs::exists(dir)) return out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.path().filename().string().rfind(prefix, 0) == 0) out.push_back(e.path().string());
  }
  return out;
}

TEST_F(ImageConverterTest, StagedCompressionOfALayerOverlapsTheApplyOfTheNext) {
  LayoutBuilder src(dir_.Join("src"));
  src.Tag(src.Image({"base", "app", "top"}), "v1");
  auto db = DedupDb::Open(dir_.Join("staged.db"));
  ASSERT_TRUE(db.ok()) << db.status();
  StagedFake fake;
  auto convert = [&](const std::string& dst) {
    auto s = ParseImageReference("oci:" + src.dir() + ":v1");
    auto d = ParseImageReference("oci:" + dir_.Join(dst) + ":x");
    auto source = OpenImageSource(*s, nullptr, dir_.path());
    EXPECT_TRUE(source.ok());
    auto dest = OpenImageDestination(*d, nullptr, dir_.path());
    EXPECT_TRUE(dest.ok());
    fs::create_directories(dir_.Join("work-" + dst));
    ConvertOptions o;
    o.store_dir = dir_.Join("staged.db.blobs");
    o.work_dir = dir_.Join("work-" + dst);
    ImageConverter conv(o, fake.Get(), db->get(), nullptr);
    return conv.Convert(**source, **dest);
  };
  auto sum = convert("a");
  ASSERT_TRUE(sum.ok()) << sum.status();
  EXPECT_EQ(sum->layers, 3);
  ASSERT_EQ(fake.t->uuids.size(), 3u);
  const auto& u = fake.t->uuids;
  // Layer i+1's apply started before layer i's compression (300 ms) ended, and it ended after
  // layer i's apply: the two overlapped.
  for (int i = 0; i + 1 < 3; ++i) {
    ASSERT_TRUE(fake.t->compress_end.count(u[i]));
    EXPECT_LT(fake.t->apply_start[u[i + 1]], fake.t->compress_end[u[i]]) << "layer " << i + 1;
    EXPECT_GT(fake.t->compress_end[u[i]], fake.t->apply_end[u[i]]);
    // One compression at a time, in order.
    EXPECT_LE(fake.t->compress_end[u[i]], fake.t->compress_start[u[i + 1]]);
  }
  // Layer 2 was applied over layer 1's sealed file (in the work directory); layer 3 over layer
  // 1's blob (in the store, compressed by then) and layer 2's sealed file.
  ASSERT_EQ(fake.t->lowers[1].size(), 1u);
  EXPECT_EQ(fake.t->lowers[1][0], fake.t->sealed[0]);
  EXPECT_EQ(fs::path(fake.t->sealed[0]).parent_path(), fs::path(dir_.Join("work-a")));
  ASSERT_EQ(fake.t->lowers[2].size(), 2u);
  EXPECT_EQ(fs::path(fake.t->lowers[2][0]).parent_path(), fs::path(dir_.Join("staged.db.blobs")));
  EXPECT_EQ(fake.t->lowers[2][1], fake.t->sealed[1]);
  // The sealed files are gone; the store holds the three blobs and nothing else.
  EXPECT_TRUE(FilesStartingWith(dir_.Join("work-a"), "sealed-").empty());
  EXPECT_EQ(
      std::distance(fs::directory_iterator(dir_.Join("staged.db.blobs")), fs::directory_iterator()),
      3);
  // The manifest names the blobs compressed from the sealed files, in order.
  auto m = blockstore::ParseImageManifest(Top(dir_.Join("a"), "x").body);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(m->layers.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    const std::string blob = BlobOf(dir_.Join("a"), m->layers[i].digest);
    EXPECT_TRUE(absl::StrContains(blob, u[i])) << i;
  }

  // Again: everything comes from the database, nothing is applied.
  auto again = convert("b");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->reused, 3);
  EXPECT_EQ(again->digest, sum->digest);
  EXPECT_EQ(fake.t->uuids.size(), 3u);
}

TEST_F(ImageConverterTest, StagedCompressionErrorNamesTheLayerAndLeavesNothing) {
  LayoutBuilder src(dir_.Join("src"));
  src.Tag(src.Image({"base", "app", "top"}), "v1");
  for (int fail : {1, 2, 3}) {
    StagedFake fake;
    fake.fail_compress = fail;
    fake.compress_time = std::chrono::milliseconds(20);
    auto s = ParseImageReference("oci:" + src.dir() + ":v1");
    auto d = ParseImageReference("oci:" + dir_.Join("dst") + ":x");
    auto source = OpenImageSource(*s, nullptr, dir_.path());
    ASSERT_TRUE(source.ok());
    auto dest = OpenImageDestination(*d, nullptr, dir_.path());
    ASSERT_TRUE(dest.ok());
    const std::string work = dir_.Join("work-fail" + std::to_string(fail));
    fs::create_directories(work);
    ConvertOptions o;
    o.store_dir = dir_.Join("fail.blobs");
    o.work_dir = work;
    ImageConverter conv(o, fake.Get(), nullptr, nullptr);
    auto sum = conv.Convert(**source, **dest);
    ASSERT_FALSE(sum.ok());
    EXPECT_EQ(sum.status().code(), absl::StatusCode::kDataLoss) << sum.status();
    EXPECT_TRUE(
        absl::StrContains(sum.status().message(), absl::StrCat("layer ", fail, " (sha256:")))
        << sum.status();
    EXPECT_TRUE(absl::StrContains(sum.status().message(), "compressor exploded"));
    // No layer after the failed one's successor was applied.
    EXPECT_LE(fake.t->uuids.size(), static_cast<size_t>(fail + 1));
    EXPECT_TRUE(FilesStartingWith(work, "sealed-").empty()) << fail;
    EXPECT_TRUE(FilesStartingWith(o.store_dir, "tmp-").empty()) << fail;
  }
}

TEST_F(ImageConverterTest, DeterministicOutput) {
  LayoutBuilder src(dir_.Join("src"));
  src.Tag(src.Image({"base", "app", "more"}), "v1");
  auto a = Run("oci:" + src.dir() + ":v1", "oci:" + dir_.Join("a") + ":x", "a.db");
  auto b = Run("oci:" + src.dir() + ":v1", "oci:" + dir_.Join("b") + ":x", "b.db");
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(a->digest, b->digest);
  EXPECT_EQ(ReadFile(dir_.Join("a/index.json")), ReadFile(dir_.Join("b/index.json")));
  EXPECT_EQ(*fake_.calls, 6);
  // Different options give a different image.
  auto s = ParseImageReference("oci:" + src.dir() + ":v1");
  auto d = ParseImageReference("oci:" + dir_.Join("c") + ":x");
  auto source = OpenImageSource(*s, nullptr, dir_.path());
  auto dest = OpenImageDestination(*d, nullptr, dir_.path());
  ConvertOptions o;
  o.store_dir = dir_.Join("c.blobs");
  o.work_dir = dir_.path();
  o.layer.algorithm = "zstd";
  ImageConverter conv(o, fake_.Fn(), nullptr, nullptr);
  auto c = conv.Convert(**source, **dest);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_NE(c->digest, a->digest);
}

TEST_F(ImageConverterTest, DedupReusesSharedBaseLayer) {
  LayoutBuilder src(dir_.Join("src"));
  src.Tag(src.Image({"base", "one"}), "a");
  src.Tag(src.Image({"base", "two"}), "b");
  auto a = Run("oci:" + src.dir() + ":a", "oci:" + dir_.Join("dst") + ":a");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(*fake_.calls, 2);
  auto b = Run("oci:" + src.dir() + ":b", "oci:" + dir_.Join("dst") + ":b");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(*fake_.calls, 3);  // only the second layer of b was applied
  EXPECT_EQ(b->reused, 1);
  // It was applied on top of a's base blob.
  auto ma = blockstore::ParseImageManifest(Top(dir_.Join("dst"), "a").body);
  auto mb = blockstore::ParseImageManifest(Top(dir_.Join("dst"), "b").body);
  ASSERT_TRUE(ma.ok() && mb.ok());
  EXPECT_EQ(ma->layers[0].digest, mb->layers[0].digest);
  EXPECT_NE(ma->layers[1].digest, mb->layers[1].digest);
  ASSERT_EQ(fake_.lowers_seen->back().size(), 1u);
  EXPECT_EQ(fs::path(fake_.lowers_seen->back()[0]).filename(), ma->layers[0].digest.substr(7));
  // The base blob was already in the layout.
  EXPECT_EQ(b->pushes.already_existed, 1u);
  // A removed blob is converted again.
  fs::remove_all(dir_.Join("convert.db.blobs"));
  auto again = Run("oci:" + src.dir() + ":b", "oci:" + dir_.Join("dst2") + ":b");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*fake_.calls, 5);
  EXPECT_EQ(again->digest, b->digest);
}

TEST_F(ImageConverterTest, IndexWithTwoPlatforms) {
  LayoutBuilder src(dir_.Join("src"));
  Descriptor amd = src.Image({"base-amd64", "x"}, "amd64");
  Descriptor arm = src.Image({"base-arm64"}, "arm64");
  src.Tag(src.Index({amd, arm}), "multi");
  auto sum = Run("oci:" + src.dir() + ":multi", "oci:" + dir_.Join("dst") + ":multi");
  ASSERT_TRUE(sum.ok()) << sum.status();
  EXPECT_EQ(sum->layers, 3);
  ManifestDocument top = Top(dir_.Join("dst"), "multi");
  EXPECT_EQ(top.media_type, blockstore::kOciIndexMediaType);
  auto idx = blockstore::ParseImageIndex(top.body);
  ASSERT_TRUE(idx.ok()) << idx.status();
  ASSERT_EQ(idx->manifests.size(), 2u);
  EXPECT_EQ(idx->manifests[0].platform->architecture, "amd64");
  EXPECT_EQ(idx->manifests[1].platform->architecture, "arm64");
  EXPECT_NE(idx->manifests[0].digest, amd.digest);
  auto m = blockstore::ParseImageManifest(BlobOf(dir_.Join("dst"), idx->manifests[1].digest));
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(m->layers.size(), 1u);
  EXPECT_TRUE(m->layers[0].annotations.count(std::string(kOverlaybdDigestAnnotation)));

  // --platform: only that one.
  auto one = Run("oci:" + src.dir() + ":multi", "oci:" + dir_.Join("dst-arm"), "other.db", nullptr,
                 blockstore::Platform{"arm64", "linux", "", "", {}});
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(one->layers, 1);
  auto none = Run("oci:" + src.dir() + ":multi", "oci:" + dir_.Join("dst-s390x"), "other.db",
                  nullptr, blockstore::Platform{"s390x", "linux", "", "", {}});
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound) << none.status();
}

TEST_F(ImageConverterTest, OciArchiveRoundTrip) {
  LayoutBuilder src(dir_.Join("src"));
  src.Tag(src.Image({"base", "app"}), "v1");
  ASSERT_TRUE(TarDirectory(src.dir(), dir_.Join("src.tar")).ok());
  auto sum = Run("oci-archive:" + dir_.Join("src.tar") + ":v1",
                 "oci-archive:" + dir_.Join("out.tar") + ":conv");
  ASSERT_TRUE(sum.ok()) << sum.status();
  ASSERT_TRUE(UntarToDirectory(dir_.Join("out.tar"), dir_.Join("out")).ok());
  ManifestDocument top = Top(dir_.Join("out"), "conv");
  EXPECT_EQ(top.digest, sum->digest);
  // Same result as from the layout itself.
  auto direct = Run("oci:" + src.dir() + ":v1", "oci:" + dir_.Join("direct") + ":conv", "d.db");
  ASSERT_TRUE(direct.ok());
  EXPECT_EQ(direct->digest, sum->digest);
}

TEST_F(ImageConverterTest, DockerArchiveSource) {
  // docker save layout: manifest.json, <config>.json, <id>/layer.tar
  std::string d = dir_.Join("save");
  fs::create_directories(d + "/l1");
  fs::create_directories(d + "/l2");
  std::string t1 = MakeTar("a", "one"), t2 = MakeTar("b", "two");
  std::ofstream(d + "/l1/layer.tar", std::ios::binary) << t1;
  std::ofstream(d + "/l2/layer.tar", std::ios::binary) << t2;
  json config = {{"architecture", "amd64"},
                 {"os", "linux"},
                 {"rootfs",
                  {{"type", "layers"},
                   {"diff_ids", {blockstore::Sha256Digest(t1), blockstore::Sha256Digest(t2)}}}},
                 {"history", {{{"created_by", "a"}}, {{"created_by", "b"}}}}};
  std::string cfg = config.dump();
  std::ofstream(d + "/" + blockstore::Sha256Digest(cfg).substr(7) + ".json") << cfg;
  json manifest = json::array({{{"Config", blockstore::Sha256Digest(cfg).substr(7) + ".json"},
                                {"RepoTags", {"example/app:1.0"}},
                                {"Layers", {"l1/layer.tar", "l2/layer.tar"}}}});
  std::ofstream(d + "/manifest.json") << manifest.dump();
  ASSERT_TRUE(TarDirectory(d, dir_.Join("save.tar")).ok());

  auto sum = Run("docker-archive:" + dir_.Join("save.tar") + ":example/app:1.0",
                 "oci:" + dir_.Join("dst") + ":app");
  ASSERT_TRUE(sum.ok()) << sum.status();
  EXPECT_EQ(sum->layers, 2);
  auto m = blockstore::ParseImageManifest(Top(dir_.Join("dst"), "app").body);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->media_type, blockstore::kDockerManifestMediaType);
  EXPECT_EQ(m->layers[0].media_type, kDockerLayerTarMediaType);
  EXPECT_EQ(m->config.media_type, blockstore::kDockerConfigMediaType);

  auto missing =
      Run("docker-archive:" + dir_.Join("save.tar") + ":nope:1", "oci:" + dir_.Join("dst2"));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound) << missing.status();
}

TEST_F(ImageConverterTest, DockerArchiveDestinationRoundTrip) {
  LayoutBuilder src(dir_.Join("src"));
  src.Tag(src.Image({"base", "app", "top"}), "v1");
  const std::string archive = dir_.Join("out.tar");
  auto sum = Run("oci:" + src.dir() + ":v1", "docker-archive:" + archive + ":example/app:obd");
  ASSERT_TRUE(sum.ok()) << sum.status();
  EXPECT_EQ(sum->layers, 3);
  // The same conversion into an OCI layout: the reference for blobs and config.
  auto direct = Run("oci:" + src.dir() + ":v1", "oci:" + dir_.Join("direct") + ":conv", "d.db");
  ASSERT_TRUE(direct.ok()) << direct.status();
  EXPECT_EQ(direct->digest, sum->digest);
  auto want = blockstore::ParseImageManifest(Top(dir_.Join("direct"), "conv").body);
  ASSERT_TRUE(want.ok()) << want.status();

  // docker save's layout: manifest.json, <config hex>.json, <layer hex>/layer.tar.
  ASSERT_TRUE(UntarToDirectory(archive, dir_.Join("unpacked")).ok());
  json saved = json::parse(ReadFile(dir_.Join("unpacked/manifest.json")));
  ASSERT_TRUE(saved.is_array());
  ASSERT_EQ(saved.size(), 1u);
  EXPECT_EQ(saved[0]["RepoTags"], json::array({"example/app:obd"}));
  EXPECT_EQ(saved[0]["Config"], want->config.digest.substr(7) + ".json");
  EXPECT_EQ(ReadFile(dir_.Join("unpacked/" + want->config.digest.substr(7) + ".json")),
            BlobOf(dir_.Join("direct"), want->config.digest));
  ASSERT_EQ(saved[0]["Layers"].size(), want->layers.size());
  for (size_t i = 0; i < want->layers.size(); ++i) {
    const std::string rel = want->layers[i].digest.substr(7) + "/layer.tar";
    EXPECT_EQ(saved[0]["Layers"][i], rel);
    EXPECT_EQ(ReadFile(dir_.Join("unpacked/" + rel)),
              BlobOf(dir_.Join("direct"), want->layers[i].digest));
  }

  // Read back as a source: the same layers (the overlaybd blobs) and config.
  auto ref = ParseImageReference("docker-archive:" + archive + ":example/app:obd");
  ASSERT_TRUE(ref.ok());
  fs::create_directories(dir_.Join("readback"));
  auto back = OpenImageSource(*ref, nullptr, dir_.Join("readback"));
  ASSERT_TRUE(back.ok()) << back.status();
  auto top = (*back)->TopManifest();
  ASSERT_TRUE(top.ok()) << top.status();
  auto got = blockstore::ParseImageManifest(top->body);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->config.digest, want->config.digest);
  ASSERT_EQ(got->layers.size(), want->layers.size());
  for (size_t i = 0; i < got->layers.size(); ++i) {
    EXPECT_EQ(got->layers[i].digest, want->layers[i].digest);
    EXPECT_EQ(got->layers[i].size, want->layers[i].size);
  }
  auto config = (*back)->SmallBlob(want->config.digest);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(*config, BlobOf(dir_.Join("direct"), want->config.digest));

  // Untagged: no RepoTags; the archive's only image is found without a name.
  ASSERT_TRUE(Run("oci:" + src.dir() + ":v1", "docker-archive:" + dir_.Join("untagged.tar")).ok());
  ASSERT_TRUE(UntarToDirectory(dir_.Join("untagged.tar"), dir_.Join("untagged")).ok());
  EXPECT_FALSE(json::parse(ReadFile(dir_.Join("untagged/manifest.json")))[0].contains("RepoTags"));

  // An index does not fit; one platform of it does.
  Descriptor amd = src.Image({"base-amd64"}, "amd64");
  Descriptor arm = src.Image({"base-arm64"}, "arm64");
  src.Tag(src.Index({amd, arm}), "multi");
  auto index = Run("oci:" + src.dir() + ":multi", "docker-archive:" + dir_.Join("multi.tar"));
  EXPECT_EQ(index.status().code(), absl::StatusCode::kInvalidArgument) << index.status();
  EXPECT_FALSE(fs::exists(dir_.Join("multi.tar")));
  auto arm_only = Run("oci:" + src.dir() + ":multi", "docker-archive:" + dir_.Join("arm.tar"),
                      "convert.db", nullptr, blockstore::Platform{"arm64", "linux", "", "", {}});
  EXPECT_TRUE(arm_only.ok()) << arm_only.status();
}

TEST_F(ImageConverterTest, BadInputs) {
  LayoutBuilder src(dir_.Join("src"));
  Descriptor img = src.Image({"base", "app"});
  src.Tag(img, "v1");
  // Unknown tag.
  auto r = Run("oci:" + src.dir() + ":nope", "oci:" + dir_.Join("d1"));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound) << r.status();
  // Not a layout.
  r = Run("oci:" + dir_.Join("nothing"), "oci:" + dir_.Join("d1"));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound) << r.status();
  // Missing layer blob: the error names the layer.
  auto m = blockstore::ParseImageManifest(BlobOf(src.dir(), img.digest));
  ASSERT_TRUE(m.ok());
  fs::remove(src.dir() + "/blobs/sha256/" + m->layers[1].digest.substr(7));
  r = Run("oci:" + src.dir() + ":v1", "oci:" + dir_.Join("d2"));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), m->layers[1].digest)) << r.status();
  // Malformed manifest.
  LayoutBuilder bad(dir_.Join("bad"));
  Descriptor junk = bad.Blob(R"({"schemaVersion":2,"config":{"digest":"nope"},"layers":[]})",
                             std::string(blockstore::kOciManifestMediaType));
  bad.Tag(junk, "v1");
  r = Run("oci:" + bad.dir() + ":v1", "oci:" + dir_.Join("d3"));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  // Config whose diff_ids do not match the layers.
  LayoutBuilder mism(dir_.Join("mism"));
  ImageManifest mm;
  mm.media_type = std::string(blockstore::kOciManifestMediaType);
  mm.config = mism.Blob(R"({"rootfs":{"type":"layers","diff_ids":[]}})",
                        std::string(blockstore::kOciConfigMediaType));
  mm.layers.push_back(mism.Blob(MakeTar("x", "y"), std::string(blockstore::kOciLayerMediaType)));
  mism.Tag(mism.Blob(blockstore::SerializeImageManifest(mm), mm.media_type), "v1");
  r = Run("oci:" + mism.dir() + ":v1", "oci:" + dir_.Join("d4"));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "diff_ids")) << r.status();
  // A failing layer converter fails the conversion with the layer named.
  auto s = ParseImageReference("oci:" + dir_.Join("mism") + ":v1");
  auto d = ParseImageReference("oci:" + dir_.Join("d5"));
  LayoutBuilder ok(dir_.Join("ok"));
  ok.Tag(ok.Image({"a"}), "v1");
  s = ParseImageReference("oci:" + ok.dir() + ":v1");
  auto source = OpenImageSource(*s, nullptr, dir_.path());
  auto dest = OpenImageDestination(*d, nullptr, dir_.path());
  ConvertOptions o;
  o.store_dir = dir_.Join("fail.blobs");
  o.work_dir = dir_.path();
  ImageConverter conv(
      o,
      [](blockstore::RandomAccessFile&, const std::vector<std::string>&, const std::string&,
         const std::string&, const std::string&,
         const LayerOptions&) -> absl::StatusOr<LayerResult> {
        return absl::DataLossError("corrupt tar");
      },
      nullptr, nullptr);
  auto f = conv.Convert(**source, **dest);
  EXPECT_EQ(f.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(absl::StrContains(f.status().message(), "layer 1")) << f.status();
}

TEST_F(ImageConverterTest, RegistrySkipExistingAndCrossMount) {
  ASSERT_EQ(::mkdir(dir_.Join("registry").c_str(), 0700), 0);
  auto registry = testing::TestRegistry::Start(dir_.Join("registry"), {});
  ASSERT_TRUE(registry.ok()) << registry.status();
  std::string host = (*registry)->host();
  blockstore::RegistryConfig config;
  config.hosts[host].plain_http = true;
  config.retry.max_attempts = 2;
  auto client = std::make_shared<blockstore::RegistryClient>(
      config, std::make_shared<blockstore::HttpClient>(blockstore::ProxySettings{}));

  LayoutBuilder src(dir_.Join("src"));
  src.Tag(src.Image({"base", "app"}), "v1");
  std::string dst = "docker://" + host + "/conv/app:v1";
  auto first = Run("oci:" + src.dir() + ":v1", dst, "convert.db", client);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->pushes.uploaded, 2u);
  // Same destination again: nothing uploaded.
  auto second = Run("oci:" + src.dir() + ":v1", dst, "convert.db", client);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->pushes.uploaded, 0u);
  EXPECT_EQ(second->pushes.already_existed, 2u);
  EXPECT_EQ(second->digest, first->digest);
  // Another repository of the same registry: both blobs mounted from the first.
  auto third =
      Run("oci:" + src.dir() + ":v1", "docker://" + host + "/other/app:v2", "convert.db", client);
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_EQ(third->pushes.mounted, 2u);
  EXPECT_EQ(third->pushes.uploaded, 0u);

  // The pushed image reads back with its annotations; convert it from the registry again.
  auto ref = blockstore::ParseReference(host + "/conv/app:v1");
  auto got = client->GetManifest(*ref);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->digest, first->digest);
  auto m = blockstore::ParseImageManifest(got->body);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->layers[0].annotations.at(std::string(kDadiRepositoryAnnotation)),
            host + "/conv/app");
  auto back = Run(dst, "oci:" + dir_.Join("back"), "back.db", client);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->layers, 2);
}

}  // namespace
}  // namespace dadi::converter::image
