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

  // A two-layer image (overlaybd annotations on every layer when `overlaybd`) as repo:tag.
  ImageManifest MakeImage(const std::string& repo, bool overlaybd) {
    const std::string config =
        R"({"architecture":"amd64","os":"linux","rootfs":{"type":"layers"}})";
    PushBlob(repo, config);
    ImageManifest m;
    m.media_type = std::string(blockstore::kOciManifestMediaType);
    m.config.media_type = std::string(blockstore::kOciConfigMediaType);
    m.config.digest = Sha256Digest(config);
    m.config.size = static_cast<int64_t>(config.size());
    for (int i = 0; i < 2; ++i) {
      const std::string layer = absl::StrCat("layer ", i, " of ", repo);
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

}  // namespace
}  // namespace dadi::cli
