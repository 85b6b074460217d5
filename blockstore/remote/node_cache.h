// The node cache: blob bytes kept on local disk under one directory, in units (1 MiB by
// default), shared by every RemoteBlob of the process and surviving restarts.
//
// Layout: <root>/blobs/<algorithm>/<hex>/
//   data      sparse file of the blob's size; present units hold the blob's bytes
//   map       32-byte header (magic "DADIUMAP", version, unit size, blob size) then one bit per
//             unit, set only after the unit's bytes are durable (fdatasync) — a crash can lose
//             bits of present units, never make a missing unit look present. Fetched units are
//             readable at once (page cache); their bits reach the map in batches: after
//             `flush_bytes` of new data, on Flush() and when the cache is closed
//   verified  present when the whole blob was downloaded and its sha256 matched the digest
// Eviction clears bits durably before punching holes. Thread-safe.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "blockstore/file/file.h"
#include "blockstore/file/unique_fd.h"

namespace dadi::blockstore {

struct NodeCacheOptions {
  std::string root;
  uint64_t unit_size = 1 << 20;  // the refill unit: misses are fetched in whole units
  // A read that misses fetches, with the units it needs, the missing units around them up to
  // the boundaries of this many bytes (aligned, a multiple of unit_size; 0: unit_size). Small
  // units keep a prefetch's rounding small; a larger fetch keeps reads from making as many
  // requests as units.
  uint64_t fetch_size = 0;
  uint64_t size_limit = 0;  // bytes of present units; 0: unlimited
  // Eviction brings usage down to this fraction of the limit.
  double low_watermark = 0.9;
  // New units are made durable (one fdatasync, then their map bits) after this many bytes.
  uint64_t flush_bytes = 64 << 20;
  // ... and at least this often.
  absl::Duration flush_interval = absl::Seconds(2);
};

struct NodeCacheStats {
  uint64_t hit_units = 0;      // units a read found present
  uint64_t miss_units = 0;     // units fetched (readahead included)
  uint64_t hit_bytes = 0;      // bytes returned without fetching
  uint64_t fetched_bytes = 0;  // bytes fetched from the registry
  uint64_t fetch_requests = 0;
  uint64_t coalesced_waits = 0;  // reads that waited on another reader's fetch
  uint64_t evicted_units = 0;
  uint64_t used_bytes = 0;
};

class NodeCache;

// Sequential bytes a blob's readers must read in a row before readahead starts.
inline constexpr uint64_t kReadaheadMinRun = 256 << 10;

// Reads `len` bytes at `offset` of the blob from its origin into `buf` (exactly).
using UnitFetcher = std::function<absl::Status(uint64_t offset, size_t len, char* buf)>;
// Reads `ranges` (sorted, disjoint) of the blob from its origin into `buf`, one after another,
// in one request where the origin allows.
using RangesFetcher = std::function<absl::Status(const std::vector<ByteRange>& ranges, char* buf)>;

// The cache state of one blob, shared by all readers of that blob.
class CachedBlob : public std::enable_shared_from_this<CachedBlob> {
 public:
  ~CachedBlob();
  const std::string& digest() const { return digest_; }
  uint64_t size() const { return size_; }
  uint64_t unit_size() const { return unit_; }
  uint64_t num_units() const { return nunits_; }

  // Reads min(n, size - offset) bytes, fetching missing units with `fetch` (concurrent misses
  // of a unit share one fetch). Once kReadaheadMinRun bytes were read in a row (by at least
  // two reads, each starting where the previous one ended), the units
  // ahead are fetched in the background, a window as large as the run so far, up to
  // `max_readahead` bytes (at most two readaheads at a time per blob), started when the read
  // comes within a window of the missing data.
  // `fetch` must stay callable after Read returns (it is copied into the background fetch).
  absl::StatusOr<size_t> Read(uint64_t offset, size_t n, char* buf, const UnitFetcher& fetch,
                              uint64_t max_readahead);
  // Fetches the units overlapping `ranges` (sorted) that are neither present nor being
  // fetched, in that order, `max_runs` runs of adjacent units per call of `fetch`. Units
  // present or in flight are skipped, not waited for; readers of a unit being prefetched wait
  // for it instead of fetching it again.
  absl::Status Prefetch(const std::vector<ByteRange>& ranges, const RangesFetcher& fetch,
                        size_t max_runs);
  // Makes units [first, last] present (used by the background download).
  absl::Status EnsureUnits(uint64_t first, uint64_t last, const UnitFetcher& fetch);
  // Drops every unit overlapping [offset, offset+len) so the next read refetches it.
  absl::Status Invalidate(uint64_t offset, uint64_t len);
  // Drops the whole blob (used when its digest did not verify).
  absl::Status Discard();

  // Makes every fetched unit durable and records it in the map.
  absl::Status Flush();

  bool verified() const;
  uint64_t PresentUnits() const;
  bool Complete() const;
  // Hashes the local copy (all units must be present) and, on a match, marks it verified.
  // DATA_LOSS on a mismatch (the caller discards).
  absl::Status VerifyAndMark();

 private:
  friend class NodeCache;
  struct Inflight {
    absl::Notification done;
    absl::Status status;
  };
  CachedBlob(NodeCache* cache, std::string digest, uint64_t size, uint64_t unit, std::string dir);
  absl::Status Load();
  absl::Status Reset();
  bool TestBit(uint64_t u) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return (bits_[u / 8] >> (u % 8)) & 1;
  }
  void SetDiskBit(uint64_t u, bool on) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (on) {
      disk_bits_[u / 8] |= static_cast<uint8_t>(1u << (u % 8));
    } else {
      disk_bits_[u / 8] &= static_cast<uint8_t>(~(1u << (u % 8)));
    }
  }
  absl::Status WriteMapByte(uint64_t u) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status FetchRun(uint64_t first, uint64_t count, const UnitFetcher& fetch);
  // Stores the claimed units [first, first + count) from `data` when `fetched` is OK, then
  // hands `fetched` (or the store's error) to the readers waiting for them.
  absl::Status StoreRun(uint64_t first, uint64_t count, absl::Status fetched, const char* data);
  absl::Status EnsureLocked(uint64_t first, uint64_t last, uint64_t window,
                            const UnitFetcher& fetch) ABSL_SHARED_LOCKS_REQUIRED(evict_mu_);
  // Evicts the given units (evict_mu_ held exclusively by the caller). Returns bytes freed.
  absl::StatusOr<uint64_t> EvictUnitsLocked(const std::vector<uint64_t>& units)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(evict_mu_);
  uint64_t UnitBytes(uint64_t u) const;
  absl::Status PreadData(uint64_t offset, size_t n, char* buf) const;

  NodeCache* cache_;
  const std::string digest_;
  const uint64_t size_;
  const uint64_t unit_;
  const uint64_t nunits_;
  const std::string dir_;
  UniqueFd data_fd_;
  UniqueFd map_fd_;

  // Held shared while bytes of present units are read or written, exclusively to evict or
  // invalidate: a hole is never punched under a reader.
  mutable absl::Mutex evict_mu_;
  mutable absl::Mutex mu_;
  std::vector<uint8_t> bits_ ABSL_GUARDED_BY(mu_);         // present (readable) units
  std::vector<uint8_t> disk_bits_ ABSL_GUARDED_BY(mu_);    // what the map file says: durable
  std::vector<uint32_t> generation_ ABSL_GUARDED_BY(mu_);  // bumped when a unit is evicted
  // Units fetched but not yet durable: (unit, generation at fetch).
  std::vector<std::pair<uint64_t, uint32_t>> pending_ ABSL_GUARDED_BY(mu_);
  uint64_t pending_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Mutex flush_mu_;  // one Flush at a time
  std::vector<uint64_t> last_access_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, std::shared_ptr<Inflight>> inflight_ ABSL_GUARDED_BY(mu_);
  uint64_t present_ ABSL_GUARDED_BY(mu_) = 0;
  bool verified_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_expected_ ABSL_GUARDED_BY(mu_) = UINT64_MAX;
  // Bytes read in a row, each read starting where the previous one ended.
  uint64_t sequential_run_ ABSL_GUARDED_BY(mu_) = 0;
  int readaheads_running_ ABSL_GUARDED_BY(mu_) = 0;
};

class NodeCache {
 public:
  // Opens (creating) the cache directory and loads every blob's map.
  static absl::StatusOr<std::shared_ptr<NodeCache>> Open(NodeCacheOptions options);
  ~NodeCache();

  // The cache entry of a blob, created on first use. A blob cached with another size or unit
  // size is reset.
  absl::StatusOr<std::shared_ptr<CachedBlob>> Blob(absl::string_view digest, uint64_t size);

  // Pinned blobs (attached images) are never evicted. Counted.
  void Pin(absl::string_view digest);
  void Unpin(absl::string_view digest);

  // Evicts least recently used units of unpinned blobs until usage is under the low watermark
  // (no-op without a limit or under it). Blobs being read are skipped this round.
  absl::Status EnforceLimit();

  NodeCacheStats Stats() const;
  const NodeCacheOptions& options() const { return options_; }
  // Makes every blob's fetched units durable now (a background thread does it every 2 s and
  // after flush_bytes of new data).
  absl::Status Flush();

 private:
  friend class CachedBlob;
  explicit NodeCache(NodeCacheOptions options)
      : options_(std::move(options)),
        fetch_units_(std::max<uint64_t>(1, options_.fetch_size / options_.unit_size)) {}
  uint64_t Tick() { return clock_.fetch_add(1, std::memory_order_relaxed) + 1; }
  void MaybeEvict();
  void RequestFlush();
  // Runs fn on a detached thread; the destructor waits for all of them.
  void RunAsync(std::function<void()> fn);
  struct AsyncState {
    absl::Mutex mu;
    int outstanding ABSL_GUARDED_BY(mu) = 0;
  };
  std::shared_ptr<AsyncState> async_ = std::make_shared<AsyncState>();
  void FlushLoop();

  const NodeCacheOptions options_;
  const uint64_t fetch_units_;  // units per fetch window (fetch_size)
  absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<CachedBlob>> blobs_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> pins_ ABSL_GUARDED_BY(mu_);
  absl::Mutex evict_run_mu_;  // one eviction pass at a time
  absl::Mutex flush_q_mu_;
  absl::CondVar flush_cv_;
  bool flush_requested_ ABSL_GUARDED_BY(flush_q_mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(flush_q_mu_) = false;
  std::thread flusher_;
  std::atomic<uint64_t> clock_{0};
  std::atomic<uint64_t> used_bytes_{0};
  std::atomic<uint64_t> hit_units_{0}, miss_units_{0}, hit_bytes_{0}, fetched_bytes_{0},
      fetch_requests_{0}, coalesced_waits_{0}, evicted_units_{0};
};

}  // namespace dadi::blockstore
