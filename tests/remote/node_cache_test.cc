// The node cache alone, with an in-memory origin: correctness at every alignment, restart,
// partial downloads, eviction, pinning, concurrent readers, invalidation, verification.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "blockstore/remote/digest.h"
#include "blockstore/remote/node_cache.h"
#include "tests/support/scratch_dir.h"

namespace dadi::blockstore {
namespace {

constexpr uint64_t kUnit = 64 << 10;

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

// An origin over a string that counts requests per unit and can be told to fail.
class Origin {
 public:
  explicit Origin(std::string data) : data_(std::move(data)) {}
  UnitFetcher Fetcher() {
    return [this](uint64_t off, size_t len, char* buf) -> absl::Status {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      requests_++;
      if (fail_from_ >= 0 && off >= static_cast<uint64_t>(fail_from_)) {
        return absl::UnavailableError("injected origin failure");
      }
      if (off + len > data_.size()) return absl::OutOfRangeError("past end");
      std::memcpy(buf, data_.data() + off, len);
      std::lock_guard<std::mutex> lock(mu_);
      for (uint64_t u = off / kUnit; u <= (off + len - 1) / kUnit; ++u) ++per_unit_[u];
      return absl::OkStatus();
    };
  }
  // Serves several ranges per request, as a multi-range GET does (counted apart from
  // requests()).
  RangesFetcher RangesFetcherFor() {
    return [this](const std::vector<ByteRange>& ranges, char* buf) -> absl::Status {
      range_requests_++;
      for (const ByteRange& r : ranges) {
        if (fail_from_ >= 0 && r.offset >= static_cast<uint64_t>(fail_from_)) {
          return absl::UnavailableError("injected origin failure");
        }
        if (r.offset + r.length > data_.size()) return absl::OutOfRangeError("past end");
        std::memcpy(buf, data_.data() + r.offset, r.length);
        buf += r.length;
        std::lock_guard<std::mutex> lock(mu_);
        for (uint64_t u = r.offset / kUnit; u <= (r.offset + r.length - 1) / kUnit; ++u) {
          ++per_unit_[u];
        }
      }
      return absl::OkStatus();
    };
  }
  int range_requests() const { return range_requests_.load(); }
  int requests() const { return requests_.load(); }
  int UnitFetches(uint64_t u) {
    std::lock_guard<std::mutex> lock(mu_);
    return per_unit_[u];
  }
  void FailFrom(int64_t offset) { fail_from_ = offset; }
  const std::string& data() const { return data_; }

 private:
  std::string data_;
  std::atomic<int> requests_{0};
  std::atomic<int> range_requests_{0};
  std::atomic<int64_t> fail_from_{-1};
  std::mutex mu_;
  std::map<uint64_t, int> per_unit_;
};

std::shared_ptr<NodeCache> OpenCache(const std::string& root, uint64_t limit = 0,
                                     uint64_t fetch_size = 0) {
  NodeCacheOptions o;
  o.root = root;
  o.unit_size = kUnit;
  o.size_limit = limit;
  o.fetch_size = fetch_size;
  absl::StatusOr<std::shared_ptr<NodeCache>> c = NodeCache::Open(o);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : nullptr;
}

std::string ReadRange(CachedBlob& blob, uint64_t off, size_t n, const UnitFetcher& f,
                      uint64_t readahead = 0) {
  std::string out(n, '\0');
  absl::StatusOr<size_t> got = blob.Read(off, n, out.data(), f, readahead);
  EXPECT_TRUE(got.ok()) << got.status();
  out.resize(got.ok() ? *got : 0);
  return out;
}

TEST(NodeCacheTest, ReadsAtEveryAlignmentFetchEachUnitOnce) {
  testing::ScratchDir dir("remote-cache");
  Origin origin(RandomBytes(5 * kUnit + 1234, 1));
  auto cache = OpenCache(dir.path());
  std::string digest = Sha256Digest(origin.data());
  auto blob = cache->Blob(digest, origin.data().size());
  ASSERT_TRUE(blob.ok());
  auto f = origin.Fetcher();
  const uint64_t size = origin.data().size();
  for (uint64_t off : {uint64_t{0}, uint64_t{1}, kUnit - 1, kUnit, kUnit + 1, 3 * kUnit - 7,
                       size - 1, size - 1234}) {
    for (size_t n :
         {size_t{1}, size_t{4096}, size_t{kUnit}, size_t{kUnit + 3}, size_t{3 * kUnit}}) {
      std::string got = ReadRange(**blob, off, n, f);
      EXPECT_EQ(got, origin.data().substr(off, n)) << off << "+" << n;
    }
  }
  std::string past(10, 'x');
  EXPECT_EQ(*(*blob)->Read(size, 10, past.data(), f, 0), 0u);
  for (uint64_t u = 0; u < 6; ++u) EXPECT_EQ(origin.UnitFetches(u), 1) << u;
  NodeCacheStats st = cache->Stats();
  EXPECT_EQ(st.miss_units, 6u);
  EXPECT_EQ(st.used_bytes, size);
  EXPECT_GT(st.hit_units, 0u);
}

TEST(NodeCacheTest, RestartKeepsOnlyCompleteUnits) {
  testing::ScratchDir dir("remote-cache");
  Origin origin(RandomBytes(8 * kUnit, 2));
  std::string digest = Sha256Digest(origin.data());
  {
    auto cache = OpenCache(dir.path());
    auto blob = cache->Blob(digest, origin.data().size());
    ASSERT_TRUE(blob.ok());
    auto f = origin.Fetcher();
    ReadRange(**blob, 0, 2 * kUnit, f);
    // The download breaks at unit 4: units 2-3 arrive, 4.. do not.
    origin.FailFrom(4 * kUnit);
    EXPECT_TRUE((*blob)->EnsureUnits(2, 3, f).ok());
    EXPECT_FALSE((*blob)->EnsureUnits(4, 7, f).ok());
    EXPECT_EQ((*blob)->PresentUnits(), 4u);
  }
  origin.FailFrom(-1);
  int before = origin.requests();
  auto cache = OpenCache(dir.path());
  EXPECT_EQ(cache->Stats().used_bytes, 4 * kUnit);
  auto blob = cache->Blob(digest, origin.data().size());
  ASSERT_TRUE(blob.ok());
  EXPECT_EQ((*blob)->PresentUnits(), 4u);
  auto f = origin.Fetcher();
  EXPECT_EQ(ReadRange(**blob, 0, 4 * kUnit, f), origin.data().substr(0, 4 * kUnit));
  EXPECT_EQ(origin.requests(), before);  // all four from disk
  EXPECT_EQ(ReadRange(**blob, 0, 8 * kUnit, f), origin.data());
  EXPECT_EQ(origin.requests(), before + 1);
}

// A crash is simulated by copying the cache directory while units are fetched but not yet
// flushed: the copy must show them missing, never present.
TEST(NodeCacheTest, UnflushedUnitsAreNotInTheMapAfterACrash) {
  testing::ScratchDir dir("remote-cache");
  Origin origin(RandomBytes(6 * kUnit, 11));
  std::string digest = Sha256Digest(origin.data());
  NodeCacheOptions o;
  o.root = dir.Join("live");
  o.unit_size = kUnit;
  o.flush_bytes = uint64_t{1} << 40;  // no flush by size
  o.flush_interval = absl::Hours(1);  // nor by time
  auto cache = *NodeCache::Open(o);
  auto blob = *cache->Blob(digest, origin.data().size());
  auto f = origin.Fetcher();
  ReadRange(*blob, 0, 2 * kUnit, f);
  ASSERT_TRUE(cache->Flush().ok());
  ReadRange(*blob, 2 * kUnit, 2 * kUnit, f);  // units 2-3: readable, not yet durable
  std::filesystem::copy(dir.Join("live"), dir.Join("crashed"),
                        std::filesystem::copy_options::recursive);
  auto after = OpenCache(dir.Join("crashed"));
  auto reopened = after->Blob(digest, origin.data().size());
  ASSERT_TRUE(reopened.ok());
  EXPECT_EQ((*reopened)->PresentUnits(), 2u);
  int before = origin.requests();
  EXPECT_EQ(ReadRange(**reopened, 0, 6 * kUnit, f), origin.data());
  EXPECT_EQ(origin.requests(), before + 1);  // units 2-5 refetched in one request
}

TEST(NodeCacheTest, CorruptMapResetsTheBlob) {
  testing::ScratchDir dir("remote-cache");
  Origin origin(RandomBytes(3 * kUnit, 3));
  std::string digest = Sha256Digest(origin.data());
  {
    auto cache = OpenCache(dir.path());
    auto blob = cache->Blob(digest, origin.data().size());
    auto f = origin.Fetcher();
    ReadRange(**blob, 0, 3 * kUnit, f);
  }
  std::string map = dir.path() + "/blobs/sha256/" + digest.substr(7) + "/map";
  {
    std::fstream m(map, std::ios::in | std::ios::out | std::ios::binary);
    m.seekp(0);
    m.write("XXXX", 4);
  }
  auto cache = OpenCache(dir.path());
  // The unreadable entry is gone; nothing looks present.
  EXPECT_EQ(cache->Stats().used_bytes, 0u);
  auto blob = cache->Blob(digest, origin.data().size());
  ASSERT_TRUE(blob.ok());
  EXPECT_EQ((*blob)->PresentUnits(), 0u);
  auto f = origin.Fetcher();
  EXPECT_EQ(ReadRange(**blob, 0, 3 * kUnit, f), origin.data());
}

TEST(NodeCacheTest, EvictsLeastRecentlyUsedUnpinnedUnits) {
  testing::ScratchDir dir("remote-cache");
  Origin a(RandomBytes(10 * kUnit, 4)), b(RandomBytes(4 * kUnit, 5));
  auto cache = OpenCache(dir.path(), 6 * kUnit);
  auto pinned = cache->Blob(Sha256Digest(b.data()), b.data().size());
  cache->Pin(Sha256Digest(b.data()));
  auto fb = b.Fetcher();
  EXPECT_EQ(ReadRange(**pinned, 0, 4 * kUnit, fb), b.data());
  auto blob = cache->Blob(Sha256Digest(a.data()), a.data().size());
  auto fa = a.Fetcher();
  for (uint64_t u = 0; u < 10; ++u) {
    EXPECT_EQ(ReadRange(**blob, u * kUnit, kUnit, fa), a.data().substr(u * kUnit, kUnit));
  }
  NodeCacheStats st = cache->Stats();
  EXPECT_LE(st.used_bytes, 6 * kUnit);
  EXPECT_GT(st.evicted_units, 0u);
  EXPECT_EQ((*pinned)->PresentUnits(), 4u);  // pinned: untouched
  // The most recent unit of a survived; the oldest went and is refetched correctly.
  int before = a.requests();
  EXPECT_EQ(ReadRange(**blob, 9 * kUnit, kUnit, fa), a.data().substr(9 * kUnit, kUnit));
  EXPECT_EQ(a.requests(), before);
  EXPECT_EQ(ReadRange(**blob, 0, kUnit, fa), a.data().substr(0, kUnit));
  EXPECT_EQ(a.requests(), before + 1);
  cache->Unpin(Sha256Digest(b.data()));
}

TEST(NodeCacheTest, ConcurrentReadersShareFetches) {
  testing::ScratchDir dir("remote-cache");
  Origin origin(RandomBytes(16 * kUnit, 6));
  auto cache = OpenCache(dir.path());
  auto blob = cache->Blob(Sha256Digest(origin.data()), origin.data().size());
  ASSERT_TRUE(blob.ok());
  auto f = origin.Fetcher();
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      for (int i = 0; i < 50; ++i) {
        uint64_t off = rng() % origin.data().size();
        size_t n = 1 + rng() % (2 * kUnit);
        std::string out(n, '\0');
        absl::StatusOr<size_t> got = (*blob)->Read(off, n, out.data(), f, 0);
        if (!got.ok() || out.substr(0, *got) != origin.data().substr(off, *got)) mismatches++;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(mismatches.load(), 0);
  for (uint64_t u = 0; u < 16; ++u) EXPECT_LE(origin.UnitFetches(u), 1) << u;
}

// A prefetch fetches the missing units of its ranges as runs, max_runs per request, skipping
// present ones; reads afterwards fetch nothing.
TEST(NodeCacheTest, PrefetchFetchesMissingRunsInFewRequests) {
  testing::ScratchDir dir("remote-cache");
  Origin origin(RandomBytes(40 * kUnit + 99, 7));
  auto cache = OpenCache(dir.path());
  auto blob = cache->Blob(Sha256Digest(origin.data()), origin.data().size());
  ASSERT_TRUE(blob.ok());
  auto f = origin.Fetcher();
  ReadRange(**blob, 4 * kUnit, 10, f);  // unit 4 present beforehand
  ASSERT_EQ(origin.requests(), 1);
  // Units 0-1 | 4 (present) | 6 | 8-9 (two ranges touching) | 20 | 30 | 40 (the short tail).
  const std::vector<ByteRange> ranges = {
      {10, kUnit},        {4 * kUnit + 1, 5},     {6 * kUnit + 7, 9},
      {8 * kUnit, kUnit}, {9 * kUnit, kUnit / 2}, {20 * kUnit + 3, 1},
      {30 * kUnit, 1},    {40 * kUnit, 99}};
  ASSERT_TRUE((*blob)->Prefetch(ranges, origin.RangesFetcherFor(), /*max_runs=*/3).ok());
  EXPECT_EQ(origin.range_requests(), 2);  // 6 runs, 3 per request
  for (uint64_t u : {0, 1, 6, 8, 9, 20, 30, 40}) EXPECT_EQ(origin.UnitFetches(u), 1) << u;
  EXPECT_EQ(origin.UnitFetches(4), 1);
  EXPECT_EQ(origin.UnitFetches(5), 0);
  const int before = origin.requests();
  for (const ByteRange& r : ranges) {
    EXPECT_EQ(ReadRange(**blob, r.offset, r.length, f), origin.data().substr(r.offset, r.length));
  }
  EXPECT_EQ(origin.requests(), before);
  // Everything present: nothing to ask for.
  ASSERT_TRUE((*blob)->Prefetch(ranges, origin.RangesFetcherFor(), 3).ok());
  EXPECT_EQ(origin.range_requests(), 2);
}

// A failed prefetch caches nothing and leaves no unit claimed: readers fetch them themselves.
TEST(NodeCacheTest, FailedPrefetchReleasesItsUnits) {
  testing::ScratchDir dir("remote-cache");
  Origin origin(RandomBytes(10 * kUnit, 8));
  auto cache = OpenCache(dir.path());
  auto blob = cache->Blob(Sha256Digest(origin.data()), origin.data().size());
  ASSERT_TRUE(blob.ok());
  origin.FailFrom(2 * kUnit);
  absl::Status s = (*blob)->Prefetch({{0, kUnit}, {3 * kUnit, 1}, {5 * kUnit, 1}, {7 * kUnit, 1}},
                                     origin.RangesFetcherFor(), 2);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_EQ(origin.range_requests(), 1);  // the second batch is not sent after the first failed
  EXPECT_EQ((*blob)->PresentUnits(), 0u);
  origin.FailFrom(-1);
  auto f = origin.Fetcher();
  for (uint64_t u : {0, 3, 5, 7}) {
    EXPECT_EQ(ReadRange(**blob, u * kUnit, 10, f), origin.data().substr(u * kUnit, 10)) << u;
  }
}

// A miss fetches the missing units of its aligned fetch window with the ones it needs, in one
// request, stopping at units present; a prefetch still works unit by unit.
TEST(NodeCacheTest, MissesFetchTheirWindow) {
  testing::ScratchDir dir("remote-cache");
  Origin origin(RandomBytes(16 * kUnit, 9));
  auto cache = OpenCache(dir.path(), 0, 4 * kUnit);
  auto blob = cache->Blob(Sha256Digest(origin.data()), origin.data().size());
  ASSERT_TRUE(blob.ok());
  auto f = origin.Fetcher();
  EXPECT_EQ(ReadRange(**blob, 5 * kUnit + 3, 10, f), origin.data().substr(5 * kUnit + 3, 10));
  EXPECT_EQ(origin.requests(), 1);
  for (uint64_t u = 4; u < 8; ++u) EXPECT_EQ(origin.UnitFetches(u), 1) << u;
  EXPECT_EQ(origin.UnitFetches(3), 0);
  EXPECT_EQ(origin.UnitFetches(8), 0);
  // Unit 10 present: a miss in unit 9 fetches 8-9 only; one in 11 fetches 11 only.
  ASSERT_TRUE((*blob)->Prefetch({{10 * kUnit, 1}}, origin.RangesFetcherFor(), 4).ok());
  EXPECT_EQ(origin.UnitFetches(10), 1);
  EXPECT_EQ(origin.UnitFetches(11), 0);  // a prefetch is not widened
  ReadRange(**blob, 9 * kUnit, 1, f);
  ReadRange(**blob, 11 * kUnit + 5, 1, f);
  EXPECT_EQ(origin.requests(), 3);
  for (uint64_t u = 8; u < 12; ++u) EXPECT_EQ(origin.UnitFetches(u), 1) << u;
  EXPECT_EQ(origin.UnitFetches(12), 0);
  EXPECT_EQ((*blob)->PresentUnits(), 8u);
}

TEST(NodeCacheTest, SequentialReadsReadAhead) {
  testing::ScratchDir dir("remote-cache");
  Origin origin(RandomBytes(32 * kUnit, 7));
  auto cache = OpenCache(dir.path());
  auto blob = cache->Blob(Sha256Digest(origin.data()), origin.data().size());
  auto f = origin.Fetcher();
  for (uint64_t off = 0; off < origin.data().size(); off += kUnit) {
    ASSERT_EQ(ReadRange(**blob, off, kUnit, f, 8 * kUnit), origin.data().substr(off, kUnit));
  }
  EXPECT_LT(origin.requests(), 12);  // 32 units in far fewer requests
}

// Readahead must be earned by a long enough run: reading a small file in small pieces fetches
// nothing past it, and a longer run fetches ahead. The cache is destroyed before counting, which
// waits for background fetches, so a readahead that was started is always seen.
TEST(NodeCacheTest, ReadaheadOnlyAfterALongSequentialRun) {
  static_assert(kReadaheadMinRun % kUnit == 0 && kReadaheadMinRun >= 2 * kUnit);
  const uint64_t run_units = kReadaheadMinRun / kUnit;
  testing::ScratchDir dir("remote-cache");
  Origin origin(RandomBytes(8 * run_units * kUnit, 11));
  {
    auto cache = OpenCache(dir.path());
    auto blob = cache->Blob(Sha256Digest(origin.data()), origin.data().size());
    ASSERT_TRUE(blob.ok());
    auto f = origin.Fetcher();
    // A "small file": one unit short of the run that earns readahead, read in 4 KiB pieces.
    const uint64_t small_end = (run_units - 1) * kUnit;
    for (uint64_t off = 0; off < small_end; off += 4096) {
      ASSERT_EQ(ReadRange(**blob, off, 4096, f, 64 * kUnit), origin.data().substr(off, 4096));
    }
    // A large file elsewhere in the blob, read in a row well past the run.
    const uint64_t large = 4 * run_units * kUnit, large_end = large + 2 * run_units * kUnit;
    for (uint64_t off = large; off < large_end; off += kUnit) {
      ASSERT_EQ(ReadRange(**blob, off, kUnit, f, 64 * kUnit), origin.data().substr(off, kUnit));
    }
  }
  for (uint64_t u = run_units - 1; u < 4 * run_units; ++u) {
    EXPECT_EQ(origin.UnitFetches(u), 0) << "unit " << u << " was read ahead of a short run";
  }
  const uint64_t past_large = 6 * run_units;
  EXPECT_EQ(origin.UnitFetches(past_large), 1) << "no readahead after a long sequential run";
}

TEST(NodeCacheTest, FailedFetchIsNotCachedAndInvalidateRefetches) {
  testing::ScratchDir dir("remote-cache");
  Origin origin(RandomBytes(4 * kUnit, 8));
  auto cache = OpenCache(dir.path());
  auto blob = cache->Blob(Sha256Digest(origin.data()), origin.data().size());
  auto f = origin.Fetcher();
  origin.FailFrom(0);
  std::string out(100, '\0');
  absl::StatusOr<size_t> got = (*blob)->Read(10, 100, out.data(), f, 0);
  EXPECT_EQ(got.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ((*blob)->PresentUnits(), 0u);
  origin.FailFrom(-1);
  EXPECT_EQ(ReadRange(**blob, 0, 4 * kUnit, f), origin.data());
  int before = origin.requests();
  ASSERT_TRUE((*blob)->Invalidate(kUnit + 5, 10).ok());
  EXPECT_EQ((*blob)->PresentUnits(), 3u);
  EXPECT_EQ(ReadRange(**blob, kUnit, 100, f), origin.data().substr(kUnit, 100));
  EXPECT_EQ(origin.requests(), before + 1);
  EXPECT_EQ(origin.UnitFetches(1), 2);
}

TEST(NodeCacheTest, VerifyMarksAndSurvivesRestart) {
  testing::ScratchDir dir("remote-cache");
  Origin origin(RandomBytes(3 * kUnit + 17, 9));
  std::string digest = Sha256Digest(origin.data());
  {
    auto cache = OpenCache(dir.path());
    auto blob = cache->Blob(digest, origin.data().size());
    auto f = origin.Fetcher();
    EXPECT_FALSE((*blob)->VerifyAndMark().ok());  // incomplete
    ASSERT_TRUE((*blob)->EnsureUnits(0, 3, f).ok());
    ASSERT_TRUE((*blob)->VerifyAndMark().ok());
    EXPECT_TRUE((*blob)->verified());
  }
  auto cache = OpenCache(dir.path());
  auto blob = cache->Blob(digest, origin.data().size());
  EXPECT_TRUE((*blob)->verified());
  // A blob whose bytes do not match its digest is refused.
  Origin liar(RandomBytes(kUnit, 10));
  auto wrong = cache->Blob(Sha256Digest("something else"), liar.data().size());
  auto fl = liar.Fetcher();
  ASSERT_TRUE((*wrong)->EnsureUnits(0, 0, fl).ok());
  EXPECT_EQ((*wrong)->VerifyAndMark().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE((*wrong)->Discard().ok());
  EXPECT_EQ((*wrong)->PresentUnits(), 0u);
}

}  // namespace
}  // namespace dadi::blockstore
