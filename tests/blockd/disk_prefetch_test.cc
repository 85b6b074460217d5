// PrefetchDiskRanges alone: a fake disk whose bytes live in two stored files, which record the
// prefetches they are asked for.
#include "blockstore/blockd/disk_prefetch.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <map>

#include "absl/synchronization/mutex.h"
#include "tests/support/scratch_dir.h"

namespace dadi::blockstore::blockd {
namespace {

class StoredFile final : public RandomAccessFile {
 public:
  explicit StoredFile(std::string name, bool fail = false) : name_(std::move(name)), fail_(fail) {}
  uint64_t Size() const override { return 1 << 30; }
  absl::StatusOr<size_t> Pread(uint64_t, size_t, char*) const override {
    return absl::InternalError("a prefetch must not read");
  }
  std::string Name() const override { return name_; }
  absl::Status Prefetch(const std::vector<ByteRange>& ranges) const override {
    absl::MutexLock lock(&mu_);
    calls_.push_back(ranges);
    return fail_ ? absl::UnavailableError("registry down") : absl::OkStatus();
  }
  std::vector<std::vector<ByteRange>> calls() const {
    absl::MutexLock lock(&mu_);
    return calls_;
  }

 private:
  std::string name_;
  bool fail_;
  mutable absl::Mutex mu_;
  mutable std::vector<std::vector<ByteRange>> calls_ ABSL_GUARDED_BY(mu_);
};

// Disk MiB k is stored at offset 1000 * k of file A for even k and of file B for odd k, each
// MiB as 1000 stored bytes (as if compressed); Locate maps a range onto them per MiB.
class FakeDisk final : public RandomAccessFile {
 public:
  FakeDisk(const StoredFile* a, const StoredFile* b) : a_(a), b_(b) {}
  uint64_t Size() const override { return 64 << 20; }
  absl::StatusOr<size_t> Pread(uint64_t, size_t, char*) const override {
    return absl::InternalError("a prefetch must not read");
  }
  std::string Name() const override { return "disk"; }
  void Locate(uint64_t offset, uint64_t n, std::vector<FileExtent>* out) const override {
    const uint64_t end = std::min(Size(), offset + n);
    for (uint64_t mib = offset >> 20; mib << 20 < end; ++mib) {
      out->push_back(FileExtent{mib % 2 == 0 ? a_ : b_, ByteRange{1000 * mib, 1000}});
    }
  }
  absl::Status WarmCache(uint64_t offset, uint64_t n) const override {
    absl::MutexLock lock(&mu_);
    warmed_.push_back(ByteRange{offset, n});
    return offset == kBadOffset ? absl::DataLossError("bad block") : absl::OkStatus();
  }
  std::vector<ByteRange> warmed() const {
    absl::MutexLock lock(&mu_);
    return warmed_;
  }
  static constexpr uint64_t kBadOffset = 63 << 20;

 private:
  const StoredFile* a_;
  const StoredFile* b_;
  mutable absl::Mutex mu_;
  mutable std::vector<ByteRange> warmed_ ABSL_GUARDED_BY(mu_);
};

TEST(DiskPrefetchTest, LocatesAndPrefetchesPerFileMerged) {
  StoredFile a("a"), b("b");
  FakeDisk disk(&a, &b);
  std::atomic<bool> stop{false};
  // MiB 3, 0-2 (across three MiB), 2 again, and a range past the disk's end.
  auto r = PrefetchDiskRanges(disk, {{3 << 20, 10}, {100, (2 << 20)}, {2 << 20, 1}, {70 << 20, 1}},
                              stop);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->disk_bytes, 10u + (2 << 20) + 1);
  EXPECT_EQ(r->stored_bytes, 5000u);  // MiB 3, 0, 1, 2, 2
  // The first batch is the first 4 located ranges (MiB 3, 0, 1, 2): one call per file, sorted;
  // the second holds MiB 2 again.
  EXPECT_EQ(r->batches, 3u);
  // The batches run on parallel workers: the two calls of file a come in either order.
  std::vector<std::vector<ByteRange>> a_calls = a.calls();
  ASSERT_EQ(a_calls.size(), 2u);
  if (a_calls[0].size() < a_calls[1].size()) std::swap(a_calls[0], a_calls[1]);
  EXPECT_EQ(a_calls[0], (std::vector<ByteRange>{{0, 1000}, {2000, 1000}}));
  EXPECT_EQ(a_calls[1], (std::vector<ByteRange>{{2000, 1000}}));
  ASSERT_EQ(b.calls().size(), 1u);
  EXPECT_EQ(b.calls()[0], (std::vector<ByteRange>{{1000, 1000}, {3000, 1000}}));
}

TEST(DiskPrefetchTest, ManyRangesGoInBatchesInTheirOrder) {
  StoredFile a("a"), b("b");
  FakeDisk disk(&a, &b);
  std::atomic<bool> stop{false};
  std::vector<ByteRange> ranges;
  for (uint64_t mib = 0; mib < 64; mib += 2) ranges.push_back({mib << 20, 1});  // all in A
  for (int i = 0; i < 3; ++i) ranges.insert(ranges.end(), ranges.begin(), ranges.begin() + 32);
  auto r = PrefetchDiskRanges(disk, ranges, stop);
  ASSERT_TRUE(r.ok()) << r.status();
  // 128 located ranges in batches of 4, 8, 16, 32, 64 and the last 4; repeats within a batch
  // merge (each batch holds at most the 32 distinct ranges).
  EXPECT_EQ(r->batches, 6u);
  EXPECT_TRUE(b.calls().empty());
  std::vector<size_t> sizes;
  for (const auto& call : a.calls()) sizes.push_back(call.size());
  std::sort(sizes.begin(), sizes.end());
  EXPECT_EQ(sizes, (std::vector<size_t>{4, 4, 8, 16, 32, 32}));
}

// The batch holding the first ranges is small: the reads that come first (a mount's) wait for
// a short request.
TEST(DiskPrefetchTest, FirstBatchIsSmall) {
  StoredFile a("a"), b("b");
  FakeDisk disk(&a, &b);
  std::atomic<bool> stop{false};
  std::vector<ByteRange> ranges;
  for (uint64_t mib = 0; mib < 64; mib += 2) ranges.push_back({mib << 20, 1});
  ASSERT_TRUE(PrefetchDiskRanges(disk, ranges, stop).ok());
  bool found = false;
  for (const auto& call : a.calls()) {
    if (!call.empty() && call.front() == ByteRange{0, 1000}) {
      found = true;
      EXPECT_EQ(call.size(), 4u);
    }
  }
  EXPECT_TRUE(found);
}

TEST(DiskPrefetchTest, FailsWithTheFilesErrorAndStops) {
  StoredFile a("a", /*fail=*/true), b("b");
  FakeDisk disk(&a, &b);
  std::atomic<bool> stop{false};
  auto r = PrefetchDiskRanges(disk, {{0, 1}}, stop);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  stop = true;
  auto stopped = PrefetchDiskRanges(disk, {{1 << 20, 1}}, stop);
  EXPECT_TRUE(stopped.ok());
  EXPECT_TRUE(b.calls().empty());
}

// Decompressing ahead goes in order, up to the byte limit, and stops at an error.
TEST(DiskPrefetchTest, DecompressesInOrderUpToTheLimit) {
  StoredFile a("a"), b("b");
  FakeDisk disk(&a, &b);
  std::atomic<bool> stop{false};
  auto n = DecompressDiskRanges(disk, {{5 << 20, 100}, {0, 200}, {9 << 20, 300}}, 350, stop);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 300u);
  EXPECT_EQ(disk.warmed(), (std::vector<ByteRange>{{5 << 20, 100}, {0, 200}}));
  EXPECT_EQ(DecompressDiskRanges(disk, {{FakeDisk::kBadOffset, 1}}, 1 << 20, stop).status().code(),
            absl::StatusCode::kDataLoss);
  stop = true;
  n = DecompressDiskRanges(disk, {{0, 1}}, 1 << 20, stop);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0u);
}

// Through a device (here a plain file: the reads are the same): the small ranges are read, the
// large ones skipped; a missing device is NOT_FOUND.
TEST(DiskPrefetchTest, SmallRangesAreReadThroughTheDevice) {
  testing::ScratchDir dir("disk-prefetch");
  const std::string path = dir.Join("device");
  {
    std::ofstream f(path, std::ios::binary);
    f << std::string(1 << 20, 'x');
  }
  std::atomic<bool> stop{false};
  absl::StatusOr<size_t> n = ReadSmallRangesThroughDevice(
      path, {{0, 4096}, {8192, 64 << 10}, {1 << 19, 16 << 10}, {(1 << 20) - 10, 10}}, 16 << 10,
      stop);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 3u);
  EXPECT_EQ(ReadSmallRangesThroughDevice(dir.Join("none"), {{0, 1}}, 4096, stop).status().code(),
            absl::StatusCode::kNotFound);
  stop = true;
  n = ReadSmallRangesThroughDevice(path, {{0, 4096}}, 4096, stop);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0u);
}

}  // namespace
}  // namespace dadi::blockstore::blockd
