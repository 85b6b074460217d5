// The attachment table and image opener without the kernel: layer blobs pushed to a real
// docker-registry (tests/remote's TestRegistry), opened through RemoteBlob and the node cache,
// attached to a fake device backend. Needs docker-registry; no privileges.
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "blockstore/blob/layer_blob_writer.h"
#include "blockstore/blockd/attachment_table.h"
#include "blockstore/blockd/image_opener.h"
#include "blockstore/file/file.h"
#include "blockstore/lsmt/writable_layer.h"
#include "blockstore/remote/digest.h"
#include "blockstore/remote/reference.h"
#include "gtest/gtest.h"
#include "tests/remote/test_servers.h"
#include "tests/support/scratch_dir.h"

namespace dadi::blockstore::blockd {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kDiskSize = 8 << 20;

// Remembers what it was given; fails attaches of ids listed in fail_ids.
class FakeBackend final : public DeviceBackend {
 public:
  absl::StatusOr<AttachedDevice> Attach(absl::string_view id,
                                        std::shared_ptr<RandomAccessFile> disk,
                                        const AttachOptions& options) override {
    absl::MutexLock lock(&mu_);
    ++attaches_;
    if (fail_ids_.count(std::string(id))) return absl::InternalError("injected attach failure");
    if (disks_.count(std::string(id))) return absl::AlreadyExistsError(std::string(id));
    disks_[std::string(id)] = disk;
    return AttachedDevice{std::string(id), "/dev/fake-" + std::string(id),
                          options.fs_type.empty() ? "" : "/mnt/" + std::string(id), disk->Size()};
  }
  absl::Status Detach(absl::string_view id) override {
    absl::MutexLock lock(&mu_);
    if (disks_.erase(std::string(id)) == 0) return absl::NotFoundError(std::string(id));
    return absl::OkStatus();
  }
  absl::Status Resize(absl::string_view, uint64_t) override {
    return absl::UnimplementedError("resize");
  }
  std::vector<AttachedDevice> List() const override { return {}; }

  std::shared_ptr<RandomAccessFile> Disk(const std::string& id) {
    absl::MutexLock lock(&mu_);
    return disks_.count(id) ? disks_[id] : nullptr;
  }
  size_t Count() {
    absl::MutexLock lock(&mu_);
    return disks_.size();
  }
  int attaches() {
    absl::MutexLock lock(&mu_);
    return attaches_;
  }
  void FailId(const std::string& id) {
    absl::MutexLock lock(&mu_);
    fail_ids_.insert(id);
  }

 private:
  absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<RandomAccessFile>> disks_;
  std::set<std::string> fail_ids_;
  int attaches_ = 0;
};

class AttachmentTableTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access("/usr/bin/docker-registry", X_OK) != 0) GTEST_SKIP() << "no docker-registry";
    fs::create_directories(dir_.Join("registry"));
    auto registry = testing::TestRegistry::Start(dir_.Join("registry"), {});
    ASSERT_TRUE(registry.ok()) << registry.status();
    registry_ = std::move(*registry);
    repository_ = registry_->host() + "/library/table";
    RegistryConfig config;
    config.hosts[registry_->host()].plain_http = true;
    config.retry.max_attempts = 2;
    config.retry.initial_backoff = absl::Milliseconds(10);
    client_ = std::make_shared<RegistryClient>(config);
    NodeCacheOptions cache_options;
    cache_options.root = dir_.Join("cache");
    auto cache = NodeCache::Open(cache_options);
    ASSERT_TRUE(cache.ok()) << cache.status();
    cache_ = *cache;
    ImageOpenerOptions opener_options;
    opener_options.remote.max_readahead = 0;
    opener_ = std::make_unique<ImageOpener>(client_, cache_, opener_options);
    table_ = std::make_unique<AttachmentTable>(opener_.get(), &backend_);
  }

  // A layer writing `data` at `offset` of the disk, pushed; returns its spec.
  LayerSpec MakeLayer(const std::string& name, uint64_t offset, const std::string& data) {
    auto layer = WritableLayer::Create(dir_.Join(name + ".data"), dir_.Join(name + ".index"),
                                       LayerInfo{kDiskSize, name, "", ""});
    EXPECT_TRUE(layer.ok());
    EXPECT_TRUE((*layer)->Write(offset, data).ok());
    const std::string path = dir_.Join(name + ".blob");
    auto writer = LayerBlobFileWriter::Create(path, ZFileWriterOptions{});
    EXPECT_TRUE(writer.ok());
    EXPECT_TRUE((*layer)->Commit(writer->get()).ok());
    EXPECT_TRUE((*writer)->Close().ok());
    auto file = OpenLocalFile(path);
    EXPECT_TRUE(file.ok());
    auto digest = Sha256DigestOfFile(**file);
    EXPECT_TRUE(digest.ok());
    auto repo = ParseReference(repository_);
    EXPECT_TRUE(repo.ok());
    EXPECT_TRUE(client_->PushBlob(*repo, *digest, **file).ok());
    return LayerSpec{*digest, (*file)->Size(), repository_};
  }

  static std::string Random(size_t n, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::string s(n, '\0');
    for (char& c : s) c = static_cast<char>(rng());
    return s;
  }

  testing::ScratchDir dir_{"dadi-blockd-table"};
  std::unique_ptr<testing::TestRegistry> registry_;
  std::string repository_;
  std::shared_ptr<RegistryClient> client_;
  std::shared_ptr<NodeCache> cache_;
  std::unique_ptr<ImageOpener> opener_;
  FakeBackend backend_;
  std::unique_ptr<AttachmentTable> table_;
};

TEST_F(AttachmentTableTest, AttachIsIdempotentAndRefcountedAndReadsTheStack) {
  const std::string low = Random(64 << 10, 1), high = Random(8 << 10, 2);
  LayerSpec l1 = MakeLayer("l1", 0, low);
  LayerSpec l2 = MakeLayer("l2", 4096, high);  // overwrites part of l1
  AttachSpec spec;
  spec.layers = {l1, l2};
  auto a = table_->Attach(spec);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->id, ChainIdHex(spec.layers));
  EXPECT_EQ(a->id.size(), 64u);
  EXPECT_NE(a->id, l2.digest.substr(7));
  EXPECT_EQ(a->refcount, 1u);
  EXPECT_EQ(a->virtual_size, kDiskSize);

  std::shared_ptr<RandomAccessFile> disk = backend_.Disk(a->id);
  ASSERT_NE(disk, nullptr);
  std::string got(64 << 10, '\0');
  auto n = disk->Pread(0, got.size(), got.data());
  ASSERT_TRUE(n.ok()) << n.status();
  std::string want = low;
  want.replace(4096, high.size(), high);
  EXPECT_TRUE(got == want);

  auto stats = table_->Stat(a->id);
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->image.bytes_read, 64u << 10);
  EXPECT_GT(stats->image.bytes_fetched, 0u);
  EXPECT_GT(stats->image.cache_misses, 0u);
  EXPECT_EQ(stats->image.open_layers, 2u);

  auto b = table_->Attach(spec);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->id, a->id);
  EXPECT_EQ(b->refcount, 2u);
  EXPECT_EQ(backend_.attaches(), 1);
  // Reading again is served from the node cache: hits move, nothing more is fetched.
  const uint64_t fetched = table_->Stat(a->id)->image.bytes_fetched;
  ASSERT_TRUE(backend_.Disk(a->id)->Pread(0, got.size(), got.data()).ok());
  EXPECT_EQ(table_->Stat(a->id)->image.bytes_fetched, fetched);
  EXPECT_GT(table_->Stat(a->id)->image.cache_hits, stats->image.cache_hits);

  AttachSpec other = spec;
  other.layers = {l1};
  other.id = a->id;
  EXPECT_EQ(table_->Attach(other).status().code(), absl::StatusCode::kFailedPrecondition);
  AttachSpec opts = spec;
  opts.options["fs_type"] = "none";
  EXPECT_EQ(table_->Attach(opts).status().code(), absl::StatusCode::kFailedPrecondition);

  EXPECT_EQ(*table_->Detach(a->id), 1u);
  EXPECT_EQ(backend_.Count(), 1u);
  EXPECT_EQ(*table_->Detach(a->id), 0u);
  EXPECT_EQ(backend_.Count(), 0u);
  EXPECT_EQ(table_->Detach(a->id).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(table_->Stat(a->id).status().code(), absl::StatusCode::kNotFound);
  disk.reset();
  EXPECT_EQ(opener_->OpenLayerCount(), 0u);
}

TEST_F(AttachmentTableTest, SharedLayersOpenOnceAndParallelAttachesOfOneIdShareADevice) {
  LayerSpec base = MakeLayer("base", 0, Random(16 << 10, 3));
  LayerSpec top1 = MakeLayer("top1", 8192, Random(4096, 4));
  LayerSpec top2 = MakeLayer("top2", 8192, Random(4096, 5));
  std::vector<std::thread> threads;
  std::vector<absl::StatusOr<AttachmentInfo>> results(8, absl::UnknownError("unset"));
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      AttachSpec spec;
      spec.layers = {base, i % 2 ? top1 : top2};
      spec.id = i % 2 ? "one" : "two";
      results[i] = table_->Attach(spec);
    });
  }
  for (std::thread& t : threads) t.join();
  for (const auto& r : results) ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(backend_.attaches(), 2);
  EXPECT_EQ(opener_->OpenLayerCount(), 3u);  // base is shared
  std::vector<AttachmentInfo> list = table_->List();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].id, "one");
  EXPECT_EQ(list[0].refcount, 4u);
  EXPECT_EQ(list[1].refcount, 4u);
  EXPECT_EQ(*table_->Detach("one", /*force=*/true), 0u);
  EXPECT_EQ(table_->List().size(), 1u);
  EXPECT_TRUE(table_->DetachAll().ok());
  EXPECT_EQ(backend_.Count(), 0u);
  EXPECT_TRUE(table_->List().empty());
}

TEST_F(AttachmentTableTest, FailedAttachesLeaveNothing) {
  LayerSpec l = MakeLayer("l", 0, Random(4096, 6));
  AttachSpec spec;
  spec.layers = {l};
  spec.id = "broken";
  backend_.FailId("broken");
  EXPECT_EQ(table_->Attach(spec).status().code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(table_->List().empty());
  EXPECT_EQ(opener_->OpenLayerCount(), 0u);

  AttachSpec missing;
  missing.layers = {LayerSpec{Sha256Digest("never pushed"), 12345, repository_}};
  EXPECT_EQ(table_->Attach(missing).status().code(), absl::StatusCode::kNotFound);
  AttachSpec bad_id = spec;
  bad_id.id = "../escape";
  EXPECT_EQ(table_->Attach(bad_id).status().code(), absl::StatusCode::kInvalidArgument);
  AttachSpec tagged = spec;
  tagged.id = "tagged";
  tagged.layers[0].repository += ":v1";
  EXPECT_EQ(table_->Attach(tagged).status().code(), absl::StatusCode::kInvalidArgument);
  AttachSpec none;
  none.id = "none";
  EXPECT_EQ(table_->Attach(none).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(table_->List().empty());
  EXPECT_EQ(backend_.Count(), 0u);

  // The same id works once the backend does.
  spec.id = "works";
  auto ok = table_->Attach(spec);
  ASSERT_TRUE(ok.ok()) << ok.status();

  // Prefetch: a whole layer and a range; bad arguments are refused.
  auto pre = table_->Prefetch("works", {{0, 8192}}, {l.digest}, /*wait=*/true);
  ASSERT_TRUE(pre.ok()) << pre.status();
  EXPECT_EQ(pre->bytes_requested, l.size + 8192);
  EXPECT_EQ(pre->bytes_done, l.size + 8192);
  EXPECT_EQ(table_->Prefetch("works", {{kDiskSize, 1}}, {}, true).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(table_->Prefetch("nope", {}, {}, true).status().code(), absl::StatusCode::kNotFound);
  // A background prefetch still running when the registry goes and the table is destroyed
  // is stopped and joined (the destructor detaches everything).
  EXPECT_TRUE(table_->Prefetch("works", {{0, kDiskSize}}, {}, /*wait=*/false).ok());
  registry_.reset();
  // Unmapped ranges read as zeros without a fetch.
  std::string buf(4096, '\0');
  auto far = backend_.Disk("works")->Pread(kDiskSize - 4096, buf.size(), buf.data());
  EXPECT_TRUE(far.ok());  // unmapped: zeros, no fetch needed
  EXPECT_EQ(buf, std::string(4096, '\0'));
}

}  // namespace
}  // namespace dadi::blockstore::blockd
