// `dadi trace save|push|show` run as the real binary: save against a fake dadi-blockd (a gRPC
// server on a unix socket in the scratch directory answering List and GetTrace), push against a
// real docker-registry (tests/remote's fixture) holding small fake overlaybd images.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "blockstore/file/file.h"
#include "blockstore/remote/digest.h"
#include "blockstore/remote/manifest.h"
#include "blockstore/remote/registry_client.h"
#include "blockstore/remote/startup_trace.h"
#include "dadi/blockd/v1/blockd.grpc.pb.h"
#include "tests/remote/test_servers.h"
#include "tests/support/scratch_dir.h"

namespace dadi::cli {
namespace {

namespace pb = ::dadi::blockd::v1;
using blockstore::Descriptor;
using blockstore::ImageManifest;
using blockstore::Reference;
using blockstore::RegistryClient;
using blockstore::Sha256Digest;
using dadi::testing::ScratchDir;
using dadi::testing::TestRegistry;

constexpr char kBlobDigest[] = "containerd.io/snapshot/overlaybd/blob-digest";

struct Result {
  int status = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

Result Dadi(const ScratchDir& dir, const std::string& args) {
  Result r;
  const std::string err_path = dir.Join("stderr");
  std::string cmd = absl::StrCat(DADI_CLI_PATH, " ", args, " 2>", err_path);
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) r.out.append(buf, n);
  int st = ::pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  std::ifstream in(err_path);
  std::stringstream ss;
  ss << in.rdbuf();
  r.err = ss.str();
  return r;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const std::string& path, const std::string& data) {
  std::ofstream(path, std::ios::binary) << data;
}

// `n` bytes that differ from offset to offset and from seed to seed.
std::string Pattern(size_t n, uint32_t seed) {
  std::string s(n, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    s[i] = static_cast<char>(x >> 24);
  }
  return s;
}

std::string TraceBlob(std::vector<blockstore::TraceRange> ranges) {
  blockstore::StartupTrace t;
  t.virtual_size = 64ull << 30;
  t.ranges = std::move(ranges);
  return blockstore::SerializeStartupTrace(t);
}

// --- a fake dadi-blockd ----------------------------------------------------------------------

class FakeBlockd final : public pb::Blockd::Service {
 public:
  std::map<std::string, std::string> traces;  // id -> blob

  grpc::Status List(grpc::ServerContext*, const pb::ListRequest*, pb::ListResponse* resp) override {
    for (const auto& [id, blob] : traces) {
      pb::Attachment* a = resp->add_attachments();
      a->set_id(id);
      a->set_mount_point("/mnt/" + id);
    }
    return grpc::Status::OK;
  }
  grpc::Status GetTrace(grpc::ServerContext*, const pb::GetTraceRequest* req,
                        pb::GetTraceResponse* resp) override {
    auto it = traces.find(req->id());
    if (it == traces.end()) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "attachment " + req->id() + " not found");
    }
    resp->set_trace(it->second);
    return grpc::Status::OK;
  }
};

class TraceSaveTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("unix:" + socket_, grpc::InsecureServerCredentials());
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
  }
  ScratchDir dir_{"cli-trace-save"};
  std::string socket_ = dir_.Join("blockd.sock");
  FakeBlockd service_;
  std::unique_ptr<grpc::Server> server_;
};

TEST_F(TraceSaveTest, OneAttachmentNeedsNoId) {
  const std::string blob = TraceBlob({{0, 4096}, {1 << 20, 8192}});
  service_.traces["only"] = blob;
  Result r = Dadi(dir_, absl::StrCat("trace save --blockd ", socket_, " ", dir_.Join("t.json")));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(ReadFile(dir_.Join("t.json")), blob);
  EXPECT_NE(r.out.find("2 ranges, 12288 bytes of the disk"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("only"), std::string::npos) << r.out;
  // No temporary file left beside it.
  EXPECT_FALSE(std::ifstream(dir_.Join("t.json.tmp")).good());

  r = Dadi(dir_, "trace show " + dir_.Join("t.json"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("2 ranges, 12288 bytes of the disk"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(Sha256Digest(blob)), std::string::npos) << r.out;
}

TEST_F(TraceSaveTest, SeveralAttachmentsNeedAnId) {
  service_.traces["aaa"] = TraceBlob({{0, 512}});
  service_.traces["bbb"] = TraceBlob({{4096, 4096}});
  const std::string file = dir_.Join("t.json");
  Result r = Dadi(dir_, absl::StrCat("trace save --blockd ", socket_, " ", file));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("2 attachments"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("aaa (/mnt/aaa)"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("bbb (/mnt/bbb)"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--id"), std::string::npos) << r.err;
  EXPECT_FALSE(std::ifstream(file).good());

  r = Dadi(dir_, absl::StrCat("trace save --blockd ", socket_, " --id bbb ", file));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(ReadFile(file), service_.traces["bbb"]);

  r = Dadi(dir_, absl::StrCat("trace save --blockd ", socket_, " --id ccc ", file));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("NOT_FOUND"), std::string::npos) << r.err;
  EXPECT_EQ(ReadFile(file), service_.traces["bbb"]);  // unchanged
}

TEST_F(TraceSaveTest, Errors) {
  const std::string file = dir_.Join("t.json");
  Result r = Dadi(dir_, absl::StrCat("trace save --blockd ", socket_, " ", file));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("no attachment"), std::string::npos) << r.err;

  service_.traces["bad"] = "{\"mediaType\": \"something else\"}";
  r = Dadi(dir_, absl::StrCat("trace save --blockd ", socket_, " ", file));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("mediaType"), std::string::npos) << r.err;
  EXPECT_FALSE(std::ifstream(file).good());

  r = Dadi(dir_, absl::StrCat("trace save --blockd ", dir_.Join("nothing.sock"), " ", file));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("UNAVAILABLE"), std::string::npos) << r.err;

  WriteFile(dir_.Join("junk.json"), "[1, 2");
  r = Dadi(dir_, "trace show " + dir_.Join("junk.json"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("not JSON"), std::string::npos) << r.err;
}

// --- push against a real registry ------------------------------------------------------------

class TracePushTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(::mkdir(dir_.Join("registry").c_str(), 0700), 0);
    auto r = TestRegistry::Start(dir_.Join("registry"), {});
    ASSERT_TRUE(r.ok()) << r.status();
    registry_ = std::move(*r);
    blockstore::RegistryConfig config;
    config.hosts[registry_->host()].plain_http = true;
    client_ = std::make_unique<RegistryClient>(config);
  }

  Reference Ref(const std::string& repo, const std::string& tag = "",
                const std::string& digest = "") const {
    Reference r;
    r.registry = registry_->host();
    r.repository = repo;
    r.tag = tag;
    r.digest = digest;
    return r;
  }

  void PushBlob(const std::string& repo, const std::string& data) {
    auto file = blockstore::NewMemoryFile(data);
    ASSERT_TRUE(client_->PushBlob(Ref(repo), Sha256Digest(data), *file).ok());
  }

  // A two-layer image (overlaybd annotations on every layer when `overlaybd`) as repo:tag, with
  // the layer blobs `layers` (default: two short strings).
  ImageManifest MakeImage(const std::string& repo, bool overlaybd,
                          std::vector<std::string> layers = {}) {
    if (layers.empty()) {
      for (int i = 0; i < 2; ++i) layers.push_back(absl::StrCat("layer ", i, " of ", repo));
    }
    const std::string config =
        R"({"architecture":"amd64","os":"linux","rootfs":{"type":"layers"}})";
    PushBlob(repo, config);
    ImageManifest m;
    m.media_type = std::string(blockstore::kOciManifestMediaType);
    m.config.media_type = std::string(blockstore::kOciConfigMediaType);
    m.config.digest = Sha256Digest(config);
    m.config.size = static_cast<int64_t>(config.size());
    for (const std::string& layer : layers) {
      PushBlob(repo, layer);
      Descriptor d;
      d.media_type = std::string(blockstore::kOciLayerMediaType);
      d.digest = Sha256Digest(layer);
      d.size = static_cast<int64_t>(layer.size());
      if (overlaybd) {
        d.annotations[kBlobDigest] = d.digest;
        d.annotations["containerd.io/snapshot/overlaybd/blob-size"] = absl::StrCat(d.size);
      }
      m.layers.push_back(d);
    }
    return m;
  }

  std::string PutManifest(const Reference& ref, const ImageManifest& m) {
    auto d = client_->PutManifest(ref, blockstore::kOciManifestMediaType,
                                  blockstore::SerializeImageManifest(m));
    EXPECT_TRUE(d.ok()) << d.status();
    return d.ok() ? *d : "";
  }

  ImageManifest GetManifest(const Reference& ref) {
    auto fetched = client_->GetManifest(ref);
    EXPECT_TRUE(fetched.ok()) << fetched.status();
    if (!fetched.ok()) return {};
    auto m = blockstore::ParseImageManifest(fetched->body);
    EXPECT_TRUE(m.ok()) << m.status();
    return m.ok() ? *m : ImageManifest{};
  }

  std::string Docker(const std::string& repo_tag) const {
    return absl::StrCat("docker://", registry_->host(), "/", repo_tag);
  }

  ScratchDir dir_{"cli-trace-push"};
  std::unique_ptr<TestRegistry> registry_;
  std::unique_ptr<RegistryClient> client_;
};

TEST_F(TracePushTest, AnnotatesTheTopLayerDeterministically) {
  ImageManifest original = MakeImage("dadi/app", true);
  PutManifest(Ref("dadi/app", "obd"), original);
  PutManifest(Ref("dadi/app", "copy"), original);
  const std::string trace = TraceBlob({{0, 4096}, {65536, 131072}});
  const std::string file = dir_.Join("trace.json");
  WriteFile(file, trace);

  Result r =
      Dadi(dir_, absl::StrCat("trace push --plain-http ", file, " ", Docker("dadi/app:obd")));
  ASSERT_EQ(r.status, 0) << r.err;
  const std::string digest = r.out.substr(0, r.out.find('\n'));
  ASSERT_TRUE(blockstore::IsValidDigest(digest)) << r.out;
  auto fetched = client_->GetManifest(Ref("dadi/app", "obd"));
  ASSERT_TRUE(fetched.ok()) << fetched.status();
  EXPECT_EQ(fetched->digest, digest);

  ImageManifest m = GetManifest(Ref("dadi/app", "obd"));
  ASSERT_EQ(m.layers.size(), 2u);
  EXPECT_EQ(m.layers[1].annotations[blockstore::kStartupTraceDigestAnnotation],
            Sha256Digest(trace));
  EXPECT_EQ(m.layers[1].annotations[blockstore::kStartupTraceSizeAnnotation],
            absl::StrCat(trace.size()));
  EXPECT_EQ(m.layers[0].annotations.count(blockstore::kStartupTraceDigestAnnotation), 0u);
  // Nothing else changed.
  m.layers[1].annotations.erase(blockstore::kStartupTraceDigestAnnotation);
  m.layers[1].annotations.erase(blockstore::kStartupTraceSizeAnnotation);
  EXPECT_EQ(blockstore::SerializeImageManifest(m), blockstore::SerializeImageManifest(original));
  auto blob = client_->GetBlob(Ref("dadi/app"), Sha256Digest(trace));
  ASSERT_TRUE(blob.ok()) << blob.status();
  EXPECT_EQ(*blob, trace);

  // Again on the annotated image, and on an untouched copy: the same manifest.
  r = Dadi(dir_, absl::StrCat("trace push --plain-http ", file, " ", Docker("dadi/app:obd")));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out.substr(0, r.out.find('\n')), digest);
  r = Dadi(dir_, absl::StrCat("trace push --plain-http ", file, " ", Docker("dadi/app:copy")));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out.substr(0, r.out.find('\n')), digest);

  // Another trace replaces the annotations.
  const std::string trace2 = TraceBlob({{8192, 4096}});
  WriteFile(file, trace2);
  r = Dadi(dir_, absl::StrCat("trace push --plain-http ", file, " ", Docker("dadi/app:obd")));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.substr(0, r.out.find('\n')), digest);
  m = GetManifest(Ref("dadi/app", "obd"));
  ASSERT_EQ(m.layers.size(), 2u);
  EXPECT_EQ(m.layers[1].annotations[blockstore::kStartupTraceDigestAnnotation],
            Sha256Digest(trace2));
  EXPECT_EQ(m.layers[1].annotations.size(), 4u);
}

TEST_F(TracePushTest, IndexNeedsPlatform) {
  ImageManifest m = MakeImage("dadi/multi", true);
  const std::string body = blockstore::SerializeImageManifest(m);
  const std::string child = PutManifest(Ref("dadi/multi", "", Sha256Digest(body)), m);
  blockstore::ImageIndex index;
  index.media_type = std::string(blockstore::kOciIndexMediaType);
  Descriptor d;
  d.media_type = std::string(blockstore::kOciManifestMediaType);
  d.digest = child;
  d.size = static_cast<int64_t>(body.size());
  d.platform = blockstore::Platform{"amd64", "linux", "", "", {}};
  index.manifests.push_back(d);
  auto put = client_->PutManifest(Ref("dadi/multi", "obd"), blockstore::kOciIndexMediaType,
                                  blockstore::SerializeImageIndex(index));
  ASSERT_TRUE(put.ok()) << put.status();
  const std::string file = dir_.Join("trace.json");
  WriteFile(file, TraceBlob({{0, 4096}}));

  Result r =
      Dadi(dir_, absl::StrCat("trace push --plain-http ", file, " ", Docker("dadi/multi:obd")));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("--platform"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("linux/amd64"), std::string::npos) << r.err;

  r = Dadi(dir_, absl::StrCat("trace push --plain-http --platform linux/amd64 ", file, " ",
                              Docker("dadi/multi:obd")));
  ASSERT_EQ(r.status, 0) << r.err;
  auto top = client_->GetManifest(Ref("dadi/multi", "obd"));
  ASSERT_TRUE(top.ok()) << top.status();
  EXPECT_TRUE(blockstore::IsIndexMediaType(top->media_type));
  auto parsed = blockstore::ParseImageIndex(top->body);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->manifests.size(), 1u);
  EXPECT_NE(r.out.find(top->digest), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(parsed->manifests[0].digest), std::string::npos) << r.out;
  ImageManifest annotated = GetManifest(Ref("dadi/multi", "", parsed->manifests[0].digest));
  ASSERT_EQ(annotated.layers.size(), 2u);
  EXPECT_EQ(annotated.layers[1].annotations.count(blockstore::kStartupTraceDigestAnnotation), 1u);
}

TEST_F(TracePushTest, Refusals) {
  PutManifest(Ref("dadi/plain", "v1"), MakeImage("dadi/plain", false));
  PutManifest(Ref("dadi/app", "obd"), MakeImage("dadi/app", true));
  const std::string good = dir_.Join("good.json");
  WriteFile(good, TraceBlob({{0, 4096}}));

  Result r =
      Dadi(dir_, absl::StrCat("trace push --plain-http ", good, " ", Docker("dadi/plain:v1")));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("not an overlaybd image"), std::string::npos) << r.err;

  const std::string bad = dir_.Join("bad.json");
  WriteFile(bad, R"({"mediaType":"application/vnd.dadi.startup-trace.v1+json","virtualSize":100,)"
                 R"("ranges":[[90,20]]})");
  r = Dadi(dir_, absl::StrCat("trace push --plain-http ", bad, " ", Docker("dadi/app:obd")));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("outside the disk"), std::string::npos) << r.err;

  const std::string empty = dir_.Join("empty.json");
  WriteFile(empty, TraceBlob({}));
  r = Dadi(dir_, absl::StrCat("trace push --plain-http ", empty, " ", Docker("dadi/app:obd")));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("no ranges"), std::string::npos) << r.err;

  r = Dadi(dir_, absl::StrCat("trace push --plain-http ", good, " ",
                              Docker("dadi/app@") + Sha256Digest("x")));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("name a tag"), std::string::npos) << r.err;

  r = Dadi(dir_, absl::StrCat("trace push --plain-http ", good, " oci:", dir_.Join("layout")));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("docker://"), std::string::npos) << r.err;

  r = Dadi(dir_, absl::StrCat("trace push --plain-http ", good, " ", Docker("dadi/none:v1")));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("NOT_FOUND"), std::string::npos) << r.err;

  // Nothing was annotated.
  ImageManifest m = GetManifest(Ref("dadi/app", "obd"));
  ASSERT_EQ(m.layers.size(), 2u);
  EXPECT_EQ(m.layers[1].annotations.count(blockstore::kStartupTraceDigestAnnotation), 0u);
}

// --- the startup pack ------------------------------------------------------------------------

class TracePackTest : public TracePushTest {
 protected:
  void SetUp() override {
    TracePushTest::SetUp();
    if (HasFatalFailure()) return;
    layers_ = {Pattern(300 << 10, 1), Pattern(100 << 10, 2)};
    for (const std::string& l : layers_) digests_.push_back(Sha256Digest(l));
  }

  // The image "dadi/app:obd" made of layers_; its top layer names `top_repository` (if any) as
  // its own repository.
  void MakePackImage(const std::string& top_repository = "") {
    ImageManifest m = MakeImage("dadi/app", true, layers_);
    if (!top_repository.empty()) {
      m.layers.back().annotations["containerd.io/snapshot/dadi/repository"] =
          absl::StrCat(registry_->host(), "/", top_repository);
    }
    PutManifest(Ref("dadi/app", "obd"), m);
  }

  // A trace whose stored ranges are `stored`.
  static blockstore::StartupTrace TraceOf(std::vector<blockstore::StoredRange> stored) {
    blockstore::StartupTrace t;
    t.virtual_size = 64ull << 30;
    t.ranges = {{0, 4096}, {1 << 20, 65536}};
    t.stored = std::move(stored);
    return t;
  }

  // What the pack of `stored` must hold: the layers' bytes, back to back in order.
  std::string Expected(const std::vector<blockstore::StoredRange>& stored) const {
    std::string pack;
    for (const blockstore::StoredRange& s : stored) {
      for (size_t i = 0; i < digests_.size(); ++i) {
        if (digests_[i] == s.blob) pack += layers_[i].substr(s.range.offset, s.range.length);
      }
    }
    return pack;
  }

  // The trace blob the top layer of dadi/app:obd names, parsed (checking its size annotation).
  blockstore::StartupTrace PushedTrace() {
    ImageManifest m = GetManifest(Ref("dadi/app", "obd"));
    EXPECT_EQ(m.layers.size(), 2u);
    if (m.layers.size() != 2) return {};
    auto& a = m.layers[1].annotations;
    auto blob = client_->GetBlob(Ref("dadi/app"), a[blockstore::kStartupTraceDigestAnnotation]);
    EXPECT_TRUE(blob.ok()) << blob.status();
    if (!blob.ok()) return {};
    EXPECT_EQ(a[blockstore::kStartupTraceSizeAnnotation], absl::StrCat(blob->size()));
    auto t = blockstore::ParseStartupTrace(*blob);
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? *t : blockstore::StartupTrace{};
  }

  // The bytes of `packs`, fetched from `repo` (each checked against its digest) back to back.
  std::string PackedBytes(const std::vector<blockstore::StartupPackRef>& packs,
                          const std::string& repo = "dadi/app") {
    std::string bytes;
    for (const blockstore::StartupPackRef& p : packs) {
      auto blob = client_->GetBlob(Ref(repo), p.digest);
      EXPECT_TRUE(blob.ok()) << repo << ": " << blob.status();
      if (!blob.ok()) return "";
      EXPECT_EQ(blob->size(), p.size);
      bytes += *blob;
    }
    return bytes;
  }

  Result Push(const std::string& file, const std::string& flags = "") {
    return Dadi(dir_, absl::StrCat("trace push --plain-http ", flags, " ", file, " ",
                                   Docker("dadi/app:obd")));
  }

  std::vector<std::string> layers_;
  std::vector<std::string> digests_;
};

TEST_F(TracePackTest, PushBuildsThePackFromTheLayers) {
  MakePackImage("dadi/layers");
  // Out of the blobs' order, both blobs interleaved, overlapping, touching and repeated ranges,
  // a range at a blob's very end, and more than one read's worth (64) of ranges in layer 0.
  std::vector<blockstore::StoredRange> stored = {
      {digests_[1], {1000, 5000}},
      {digests_[0], {200000, 300}},
      {digests_[0], {10, 20}},
      {digests_[0], {25, 100}},  // overlaps the one before
      {digests_[0], {125, 7}},   // touches it
      {digests_[1], {(100 << 10) - 1, 1}},
      {digests_[0], {10, 20}},  // again
      {digests_[0], {(300 << 10) - 4096, 4096}},
  };
  for (uint64_t i = 0; i < 150; ++i) {
    stored.push_back({digests_[0], {(149 - i) * 1500 + 3000, 700 + i}});
  }
  // Whole layers, so that the bytes take more than the first (256 KiB) pack.
  stored.push_back({digests_[0], {0, 300 << 10}});
  stored.push_back({digests_[1], {0, 100 << 10}});
  blockstore::StartupTrace t = TraceOf(stored);
  // A pack already in the file is replaced by the ones built.
  const std::string expected = Expected(stored);
  t.packs = {blockstore::StartupPackRef{Sha256Digest("stale"), expected.size(), stored.size()}};
  const std::string file = dir_.Join("trace.json");
  WriteFile(file, blockstore::SerializeStartupTrace(t));

  Result r = Push(file);
  ASSERT_EQ(r.status, 0) << r.err;
  const std::string digest = r.out.substr(0, r.out.find('\n'));
  ASSERT_TRUE(blockstore::IsValidDigest(digest)) << r.out;
  EXPECT_EQ(r.out, digest + "\n");  // stdout as without a pack
  EXPECT_NE(r.err.find(absl::StrCat("startup packs: 2 blobs, ", expected.size(),
                                    " bytes of 2 layer blobs (", stored.size(), " ranges)")),
            std::string::npos)
      << r.err;

  blockstore::StartupTrace pushed = PushedTrace();
  // Two packs: the first cut once it holds 256 KiB, the second the rest.
  ASSERT_EQ(pushed.packs.size(), 2u);
  EXPECT_GE(pushed.packs[0].size, uint64_t{256} << 10);
  EXPECT_EQ(pushed.packs[0].ranges + pushed.packs[1].ranges, stored.size());
  EXPECT_EQ(pushed.stored, stored);
  EXPECT_EQ(pushed.ranges, t.ranges);
  // The packs, in the image's repository and in the top layer's own one.
  for (const char* repo : {"dadi/app", "dadi/layers"}) {
    EXPECT_TRUE(PackedBytes(pushed.packs, repo) == expected) << repo;
  }
  auto trace_in_layers = client_->HeadBlob(Ref("dadi/layers"),
                                           blockstore::Sha256Digest(SerializeStartupTrace(pushed)));
  EXPECT_TRUE(trace_in_layers.ok()) << trace_in_layers.status();
  EXPECT_EQ(client_->HeadBlob(Ref("dadi/app"), Sha256Digest("stale")).status().code(),
            absl::StatusCode::kNotFound);

  // The same file again: the same manifest.
  r = Push(file);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, digest + "\n");

  r = Dadi(dir_, "trace show " + file);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find(absl::StrCat(stored.size(), " stored ranges, ", expected.size(),
                                    " bytes of 2 layer blobs, 1 packs")),
            std::string::npos)
      << r.out;
}

TEST_F(TracePackTest, StoredRangesOfAnotherImageAreRefused) {
  MakePackImage();
  const std::string other = Sha256Digest("a layer of another image");
  const std::string file = dir_.Join("trace.json");
  WriteFile(file, blockstore::SerializeStartupTrace(
                      TraceOf({{digests_[0], {0, 100}}, {other, {0, 100}}})));
  Result r = Push(file);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("FAILED_PRECONDITION"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(absl::StrCat("stored range 1 of the trace names blob ", other,
                                    ", which is not a layer of")),
            std::string::npos)
      << r.err;
  EXPECT_EQ(r.err.find("startup packs:"), std::string::npos) << r.err;

  // A range past the end of its layer.
  const std::string file2 = dir_.Join("trace2.json");
  WriteFile(file2,
            blockstore::SerializeStartupTrace(TraceOf({{digests_[1], {(100 << 10) - 10, 11}}})));
  r = Push(file2);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("past the end of layer " + digests_[1]), std::string::npos) << r.err;

  // Nothing was pushed: no annotation, no trace blob, no pack.
  ImageManifest m = GetManifest(Ref("dadi/app", "obd"));
  ASSERT_EQ(m.layers.size(), 2u);
  EXPECT_EQ(m.layers[1].annotations.count(blockstore::kStartupTraceDigestAnnotation), 0u);
  for (const std::string& f : {file, file2}) {
    EXPECT_EQ(client_->HeadBlob(Ref("dadi/app"), Sha256Digest(ReadFile(f))).status().code(),
              absl::StatusCode::kNotFound);
  }
  EXPECT_EQ(
      client_->HeadBlob(Ref("dadi/app"), Sha256Digest(layers_[0].substr(0, 100))).status().code(),
      absl::StatusCode::kNotFound);
}

TEST_F(TracePackTest, NoPackPushesTheTraceWithoutOne) {
  MakePackImage();
  const std::vector<blockstore::StoredRange> stored = {{digests_[0], {4096, 8192}},
                                                       {digests_[1], {0, 512}}};
  blockstore::StartupTrace t = TraceOf(stored);
  const std::string without = blockstore::SerializeStartupTrace(t);
  t.packs = {blockstore::StartupPackRef{Sha256Digest(Expected(stored)), Expected(stored).size(),
                                        stored.size()}};
  const std::string file = dir_.Join("trace.json");
  WriteFile(file, blockstore::SerializeStartupTrace(t));

  // The file's pack is dropped: its blob was never pushed.
  Result r = Push(file, "--no-pack");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.err.find("startup pack"), std::string::npos) << r.err;
  ImageManifest m = GetManifest(Ref("dadi/app", "obd"));
  ASSERT_EQ(m.layers.size(), 2u);
  EXPECT_EQ(m.layers[1].annotations[blockstore::kStartupTraceDigestAnnotation],
            Sha256Digest(without));
  blockstore::StartupTrace pushed = PushedTrace();
  EXPECT_TRUE(pushed.packs.empty());
  EXPECT_EQ(pushed.stored, stored);
  EXPECT_EQ(client_->HeadBlob(Ref("dadi/app"), t.packs[0].digest).status().code(),
            absl::StatusCode::kNotFound);

  // Without the flag, the same file gets its pack built and pushed.
  r = Push(file);
  ASSERT_EQ(r.status, 0) << r.err;
  pushed = PushedTrace();
  EXPECT_EQ(pushed.packs, t.packs);  // small enough for one pack
  EXPECT_TRUE(PackedBytes(pushed.packs) == Expected(stored));
}

}  // namespace
}  // namespace dadi::cli
