// Lazy reads heal a bad node-cache copy: a ZFile read through a RemoteBlob whose cached unit was
// corrupted on disk fails the block's CRC, invalidates the unit, refetches it from a real
// docker-registry on loopback and returns the right bytes.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "blockstore/file/file.h"
#include "blockstore/file/unique_fd.h"
#include "blockstore/remote/digest.h"
#include "blockstore/remote/registry_client.h"
#include "blockstore/remote/remote_blob.h"
#include "blockstore/zfile/zfile_reader.h"
#include "blockstore/zfile/zfile_writer.h"
#include "tests/remote/test_servers.h"
#include "tests/support/scratch_dir.h"

namespace dadi::blockstore {
namespace {

using dadi::testing::ScratchDir;
using dadi::testing::TestRegistry;

// Compressible but not trivially: a counter in text with some noise.
std::string LayerData(size_t n) {
  std::string s;
  uint32_t x = 12345;
  while (s.size() < n) {
    x = x * 1103515245 + 12345;
    s += "block data line " + std::to_string(s.size()) + " " + std::to_string(x >> 16) + "\n";
  }
  s.resize(n);
  return s;
}

absl::StatusOr<std::string> Compress(const std::string& data, const std::string& path) {
  absl::StatusOr<std::unique_ptr<WritableFile>> out = CreateLocalFile(path);
  if (!out.ok()) return out.status();
  absl::StatusOr<std::unique_ptr<ZFileWriter>> w = ZFileWriter::Create(out->get(), {});
  if (!w.ok()) return w.status();
  if (absl::Status s = (*w)->Append(data); !s.ok()) return s;
  if (absl::Status s = (*w)->Close(); !s.ok()) return s;
  if (absl::Status s = (*out)->Close(); !s.ok()) return s;
  absl::StatusOr<std::unique_ptr<RandomAccessFile>> in = OpenLocalFile(path);
  if (!in.ok()) return in.status();
  std::string z((*in)->Size(), '\0');
  if (absl::Status s = PreadExact(**in, 0, z.size(), z.data(), "zfile"); !s.ok()) return s;
  return z;
}

// Flips a bit of the byte at `offset` of a file on disk.
void FlipByte(const std::string& path, uint64_t offset) {
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  ASSERT_TRUE(fd.valid()) << path;
  char c = 0;
  ASSERT_EQ(::pread(fd.get(), &c, 1, static_cast<off_t>(offset)), 1);
  c ^= 0x10;
  ASSERT_EQ(::pwrite(fd.get(), &c, 1, static_cast<off_t>(offset)), 1);
}

TEST(RemoteBlobIntegrityTest, CorruptCachedUnitIsRefetchedThroughZFile) {
  ScratchDir dir("remote-integrity");
  ASSERT_EQ(::mkdir(dir.Join("registry").c_str(), 0700), 0);
  absl::StatusOr<std::unique_ptr<TestRegistry>> registry =
      TestRegistry::Start(dir.Join("registry"), {});
  ASSERT_TRUE(registry.ok()) << registry.status();

  RegistryConfig config;
  config.connect_timeout = absl::Seconds(2);
  config.request_timeout = absl::Seconds(5);
  config.retry.initial_backoff = absl::Milliseconds(20);
  config.hosts[(*registry)->host()].plain_http = true;
  auto client =
      std::make_shared<RegistryClient>(config, std::make_shared<HttpClient>(ProxySettings{}));
  Reference repo;
  repo.registry = (*registry)->host();
  repo.repository = "dadi/integrity";

  const std::string data = LayerData(600 * 1024);
  absl::StatusOr<std::string> z = Compress(data, dir.Join("layer.zfile"));
  ASSERT_TRUE(z.ok()) << z.status();
  const std::string digest = Sha256Digest(*z);
  std::unique_ptr<RandomAccessFile> z_file = NewMemoryFile(*z);
  ASSERT_TRUE(client->PushBlob(repo, digest, *z_file, {}).ok());

  NodeCacheOptions cache_options;
  cache_options.root = dir.Join("cache");
  cache_options.unit_size = 64 << 10;
  absl::StatusOr<std::shared_ptr<NodeCache>> cache = NodeCache::Open(cache_options);
  ASSERT_TRUE(cache.ok()) << cache.status();
  absl::StatusOr<std::unique_ptr<RemoteBlob>> opened =
      RemoteBlob::Open(client, repo, digest, z->size(), *cache);
  ASSERT_TRUE(opened.ok()) << opened.status();
  std::shared_ptr<RemoteBlob> blob = *std::move(opened);

  // A first reader pulls every unit into the node cache.
  absl::StatusOr<std::unique_ptr<ZFileReader>> first = ZFileReader::Open(blob);
  ASSERT_TRUE(first.ok()) << first.status();
  std::string all(data.size(), '\0');
  ASSERT_TRUE(PreadExact(**first, 0, all.size(), all.data(), "layer").ok());
  ASSERT_EQ(all, data);
  ASSERT_TRUE((*cache)->Flush().ok());

  // Corrupt one byte inside block 20's stored bytes in the cache's data file.
  constexpr uint64_t kBlock = 20;
  ASSERT_GT((*first)->block_count(), kBlock);
  uint64_t start = ZFileHeader::kEncodedLength;
  for (uint64_t k = 0; k < kBlock; ++k) start += (*first)->stored_block_length(k);
  const uint64_t at = start + (*first)->stored_block_length(kBlock) / 2;
  const std::string data_path =
      dir.Join("cache") + "/blobs/sha256/" + digest.substr(digest.find(':') + 1) + "/data";
  FlipByte(data_path, at);
  char cached = 0;
  ASSERT_TRUE(PreadExact(*blob, at, 1, &cached, "byte").ok());
  ASSERT_NE(cached, (*z)[at]) << "the corruption must be what the blob serves";

  // A reader with a fresh block cache reads the bad copy, invalidates, refetches: right bytes.
  const uint64_t requests = blob->Stats().fetch_requests;
  absl::StatusOr<std::unique_ptr<ZFileReader>> second = ZFileReader::Open(blob);
  ASSERT_TRUE(second.ok()) << second.status();
  std::fill(all.begin(), all.end(), '\0');
  absl::Status s = PreadExact(**second, 0, all.size(), all.data(), "layer");
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(all, data);
  EXPECT_EQ((*second)->refetched_blocks(), 1u);
  EXPECT_EQ(blob->Stats().fetch_requests, requests + 1);  // the one unit, once
  // The cache holds the right bytes again.
  ASSERT_TRUE(PreadExact(*blob, at, 1, &cached, "byte").ok());
  EXPECT_EQ(cached, (*z)[at]);
  ASSERT_TRUE((*cache)->Flush().ok());
  absl::StatusOr<std::unique_ptr<RandomAccessFile>> on_disk = OpenLocalFile(data_path);
  ASSERT_TRUE(on_disk.ok()) << on_disk.status();
  ASSERT_TRUE(PreadExact(**on_disk, at, 1, &cached, "byte").ok());
  EXPECT_EQ(cached, (*z)[at]);
}

}  // namespace
}  // namespace dadi::blockstore
