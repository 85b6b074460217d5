// A bounded cache of decompressed ZFile blocks, shareable by many readers and threads. Sharded;
// each shard is an open-addressing hash map onto a vector of entries with CLOCK eviction, so a
// hit takes only a shared lock and touches few cache lines (no LRU list to relink).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"

namespace dadi::blockstore {

class BlockSlab;

// A decompressed block. Its memory comes from the cache's slab of huge-page-backed chunks:
// random reads across hundreds of MiB of cached blocks would otherwise spend most of their time
// in TLB misses (measured: 3x slower than the kernel page cache with 4 KiB pages).
class CachedBlock {
 public:
  CachedBlock(char* data, size_t size, std::shared_ptr<BlockSlab> slab)
      : data_(data), size_(size), slab_(std::move(slab)) {}
  ~CachedBlock();
  CachedBlock(const CachedBlock&) = delete;
  CachedBlock& operator=(const CachedBlock&) = delete;
  const char* data() const { return data_; }
  char* mutable_data() { return data_; }
  size_t size() const { return size_; }

 private:
  char* data_;
  size_t size_;
  std::shared_ptr<BlockSlab> slab_;
};

class BlockCache {
 public:
  using Value = std::shared_ptr<const CachedBlock>;

  // Holds at most about `capacity_bytes` of block data (at least one block per shard).
  explicit BlockCache(size_t capacity_bytes);
  BlockCache(const BlockCache&) = delete;
  BlockCache& operator=(const BlockCache&) = delete;

  // A fresh owner id; each reader keys its blocks with its own id.
  uint64_t NewId() { return next_id_.fetch_add(1, std::memory_order_relaxed); }

  // The cached block, or null.
  Value Lookup(uint64_t id, uint64_t block);
  // Copies bytes [offset, offset + n) of the cached block into dst; false if not cached (or
  // shorter than offset + n). Cheaper than Lookup: no reference count traffic.
  bool CopyOut(uint64_t id, uint64_t block, size_t offset, size_t n, char* dst);
  void Insert(uint64_t id, uint64_t block, Value value);
  // Memory for a block of n bytes (n <= 64 KiB), to decompress into before Insert.
  std::shared_ptr<CachedBlock> Allocate(size_t n);

  size_t capacity_bytes() const { return capacity_; }

 private:
  static constexpr size_t kShards = 16;
  struct Key {
    uint64_t id;
    uint64_t block;
    bool operator==(const Key& o) const { return id == o.id && block == o.block; }
    template <typename H>
    friend H AbslHashValue(H h, const Key& k) {
      return H::combine(std::move(h), k.id, k.block);
    }
  };
  struct Entry {
    Entry(Key k, Value v) : key(k), value(std::move(v)) {}
    Entry(Entry&& o) noexcept
        : key(o.key), value(std::move(o.value)), referenced(o.referenced.load()) {}
    Entry& operator=(Entry&& o) noexcept {
      key = o.key;
      value = std::move(o.value);
      referenced.store(o.referenced.load());
      return *this;
    }
    Key key;
    Value value;
    std::atomic<bool> referenced{false};  // set on hit (under a shared lock), cleared by the hand
  };
  struct Shard {
    absl::Mutex mu;
    absl::flat_hash_map<Key, uint32_t> map ABSL_GUARDED_BY(mu);  // key -> index in entries
    std::vector<Entry> entries ABSL_GUARDED_BY(mu);
    size_t hand ABSL_GUARDED_BY(mu) = 0;
    size_t bytes ABSL_GUARDED_BY(mu) = 0;
  };
  static size_t ShardIndex(const Key& k) {
    uint64_t h = (k.id * 0x9E3779B97F4A7C15ull) ^ (k.block * 0xBF58476D1CE4E5B9ull);
    return static_cast<size_t>((h ^ (h >> 31)) % kShards);
  }
  // Evicts one entry chosen by the clock hand.
  static void EvictOne(Shard& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu);

  size_t capacity_;
  size_t shard_capacity_;
  std::shared_ptr<BlockSlab> slab_;
  std::atomic<uint64_t> next_id_{1};
  Shard shards_[kShards];
};

}  // namespace dadi::blockstore
