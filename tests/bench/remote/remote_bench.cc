// remote_bench [--size-mib N] [--random-reads N]
//
// Starts docker-registry on loopback, pushes a random blob (200 MiB by default) and measures, in
// the same run:
//   1. curl downloading the whole blob to /dev/null and to a local file (the ceilings of a
//      sequential read: the cache must write every byte to disk), and the client's own
//      sequential 16 MiB range GETs without a cache,
//   2. a cold sequential read of the whole blob through RemoteBlob (1 MiB preads),
//   3. random 4 KiB preads through RemoteBlob with a warm cache,
//   4. the same 4 KiB preads from a local file holding the blob (page cache warm),
// and prints throughput, requests and bytes sent to the registry, and the ratios.
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "blockstore/file/file.h"
#include "blockstore/remote/digest.h"
#include "blockstore/remote/registry_client.h"
#include "blockstore/remote/remote_blob.h"
#include "tests/remote/test_servers.h"
#include "tests/support/scratch_dir.h"

namespace dadi::blockstore {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

int Fail(const absl::Status& s, const char* what) {
  std::fprintf(stderr, "remote_bench: %s: %s\n", what, s.ToString().c_str());
  return 1;
}

struct Row {
  std::string name;
  double value;
  std::string unit;
  uint64_t requests;
  uint64_t bytes;
};

int Main(int argc, char** argv) {
  uint64_t size_mib = 200;
  int random_reads = 20000;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--size-mib") == 0) size_mib = std::strtoull(argv[i + 1], nullptr, 10);
    if (std::strcmp(argv[i], "--random-reads") == 0) random_reads = std::atoi(argv[i + 1]);
  }
  const uint64_t size = size_mib << 20;
  dadi::testing::ScratchDir dir("remote-bench");
  std::string registry_dir = dir.Join("registry");
  ::mkdir(registry_dir.c_str(), 0700);
  auto registry = dadi::testing::TestRegistry::Start(registry_dir, {});
  if (!registry.ok()) return Fail(registry.status(), "start docker-registry");
  const std::string host = (*registry)->host();

  // The blob: pseudo-random bytes in a local file (also the local-file baseline).
  std::string blob_path = dir.Join("blob");
  {
    auto out = CreateLocalFile(blob_path);
    if (!out.ok()) return Fail(out.status(), "create blob");
    std::mt19937_64 rng(42);
    std::string chunk(1 << 20, '\0');
    for (uint64_t done = 0; done < size; done += chunk.size()) {
      for (size_t i = 0; i < chunk.size(); i += 8) {
        uint64_t v = rng();
        std::memcpy(chunk.data() + i, &v, 8);
      }
      if (absl::Status s = (*out)->Append(chunk); !s.ok()) return Fail(s, "write blob");
    }
    if (absl::Status s = (*out)->Close(); !s.ok()) return Fail(s, "close blob");
  }
  auto local = OpenLocalFile(blob_path);
  if (!local.ok()) return Fail(local.status(), "open blob");
  absl::StatusOr<std::string> digest = Sha256DigestOfFile(**local);
  if (!digest.ok()) return Fail(digest.status(), "hash blob");

  RegistryConfig config;
  config.hosts[host].plain_http = true;
  auto client =
      std::make_shared<RegistryClient>(config, std::make_shared<HttpClient>(ProxySettings{}));
  Reference repo;
  repo.registry = host;
  repo.repository = "bench/blob";
  if (auto pushed = client->PushBlob(repo, *digest, **local); !pushed.ok()) {
    return Fail(pushed.status(), "push");
  }
  std::vector<Row> rows;

  // 1. curl, whole blob.
  {
    std::string url = absl::StrCat("http://", host, "/v2/bench/blob/blobs/", *digest);
    auto t0 = Clock::now();
    absl::Status s = dadi::testing::RunCommand(
        {"curl", "-sS", "--fail", "--noproxy", "*", "-o", "/dev/null", url}, dir.Join("curl.log"));
    auto t1 = Clock::now();
    if (!s.ok()) return Fail(s, "curl");
    rows.push_back(
        {"curl whole blob to /dev/null", size / 1048576.0 / Seconds(t0, t1), "MiB/s", 1, size});
  }

  // 1a. curl writing the whole blob to a local file: the ceiling once bytes must land on disk.
  {
    std::string url = absl::StrCat("http://", host, "/v2/bench/blob/blobs/", *digest);
    auto t0 = Clock::now();
    absl::Status s = dadi::testing::RunCommand(
        {"curl", "-sS", "--fail", "--noproxy", "*", "-o", dir.Join("curl-copy"), url},
        dir.Join("curl.log"));
    auto t1 = Clock::now();
    if (!s.ok()) return Fail(s, "curl");
    ::unlink(dir.Join("curl-copy").c_str());
    rows.push_back(
        {"curl whole blob to a local file", size / 1048576.0 / Seconds(t0, t1), "MiB/s", 1, size});
  }

  // 1b. The registry client alone: sequential 16 MiB range GETs into memory, no cache.
  {
    HttpStats before = client->Stats().http;
    std::string buf(16 << 20, '\0');
    auto t0 = Clock::now();
    for (uint64_t off = 0; off < size; off += buf.size()) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), size - off));
      if (absl::Status s = client->ReadBlobRange(repo, *digest, off, n, buf.data()); !s.ok()) {
        return Fail(s, "range GET");
      }
    }
    auto t1 = Clock::now();
    HttpStats after = client->Stats().http;
    rows.push_back({"range GETs of 16 MiB, no cache", size / 1048576.0 / Seconds(t0, t1), "MiB/s",
                    after.requests - before.requests,
                    after.bytes_received - before.bytes_received});
  }

  // 2. RemoteBlob, cold sequential 1 MiB reads.
  NodeCacheOptions cache_options;
  cache_options.root = dir.Join("cache");
  auto cache = NodeCache::Open(cache_options);
  if (!cache.ok()) return Fail(cache.status(), "open cache");
  auto blob = RemoteBlob::Open(client, repo, *digest, size, *cache);
  if (!blob.ok()) return Fail(blob.status(), "open RemoteBlob");
  {
    HttpStats before = client->Stats().http;
    std::string buf(1 << 20, '\0');
    auto t0 = Clock::now();
    for (uint64_t off = 0; off < size; off += buf.size()) {
      absl::StatusOr<size_t> got = (*blob)->Pread(off, buf.size(), buf.data());
      if (!got.ok()) return Fail(got.status(), "sequential read");
    }
    auto t1 = Clock::now();
    HttpStats after = client->Stats().http;
    rows.push_back({"RemoteBlob sequential, cold cache", size / 1048576.0 / Seconds(t0, t1),
                    "MiB/s", after.requests - before.requests,
                    after.bytes_received - before.bytes_received});
  }

  // 3 and 4. Random 4 KiB reads: warm cache versus local file, same offsets.
  std::vector<uint64_t> offsets(random_reads);
  std::mt19937_64 rng(7);
  for (uint64_t& o : offsets) o = (rng() % (size / 4096)) * 4096;
  auto random_reads_of = [&](const RandomAccessFile& f, double* ops) -> absl::Status {
    char buf[4096];
    auto t0 = Clock::now();
    for (uint64_t o : offsets) {
      absl::StatusOr<size_t> got = f.Pread(o, sizeof(buf), buf);
      if (!got.ok()) return got.status();
    }
    *ops = offsets.size() / Seconds(t0, Clock::now());
    return absl::OkStatus();
  };
  double warm_ops = 0, local_ops = 0;
  {
    double ignore;  // warm both page caches first
    if (absl::Status s = random_reads_of(**local, &ignore); !s.ok()) return Fail(s, "local");
    if (absl::Status s = random_reads_of(**blob, &ignore); !s.ok()) return Fail(s, "warm");
    HttpStats before = client->Stats().http;
    if (absl::Status s = random_reads_of(**blob, &warm_ops); !s.ok()) return Fail(s, "warm");
    HttpStats after = client->Stats().http;
    rows.push_back({"RemoteBlob random 4 KiB, warm cache", warm_ops, "reads/s",
                    after.requests - before.requests,
                    after.bytes_received - before.bytes_received});
    if (absl::Status s = random_reads_of(**local, &local_ops); !s.ok()) return Fail(s, "local");
    rows.push_back({"local file random 4 KiB", local_ops, "reads/s", 0, 0});
  }

  NodeCacheStats cs = (*cache)->Stats();
  std::printf("\nremote_bench: %llu MiB blob, docker-registry on loopback, %d random reads\n\n",
              static_cast<unsigned long long>(size_mib), random_reads);
  std::printf("%-38s %14s %-8s %10s %16s\n", "case", "rate", "", "requests", "registry bytes");
  for (const Row& r : rows) {
    std::printf("%-38s %14.1f %-8s %10llu %16llu\n", r.name.c_str(), r.value, r.unit.c_str(),
                static_cast<unsigned long long>(r.requests),
                static_cast<unsigned long long>(r.bytes));
  }
  std::printf("\n%-52s %6.2f\n",
              "sequential RemoteBlob / curl to /dev/null:", rows[3].value / rows[0].value);
  std::printf("%-52s %6.2f\n",
              "sequential RemoteBlob / curl to a local file:", rows[3].value / rows[1].value);
  std::printf("%-52s %6.2f\n",
              "sequential RemoteBlob / client range GETs alone:", rows[3].value / rows[2].value);
  std::printf("%-52s %6.2f  (acceptance: >= 0.50)\n",
              "warm random 4 KiB RemoteBlob / local file:", warm_ops / local_ops);
  std::printf("cache: %llu units fetched in %llu requests, %llu hit units, %llu MiB used\n",
              static_cast<unsigned long long>(cs.miss_units),
              static_cast<unsigned long long>(cs.fetch_requests),
              static_cast<unsigned long long>(cs.hit_units),
              static_cast<unsigned long long>(cs.used_bytes >> 20));
  return warm_ops / local_ops >= 0.5 ? 0 : 2;
}

}  // namespace
}  // namespace dadi::blockstore

int main(int argc, char** argv) { return dadi::blockstore::Main(argc, argv); }
