// A bounded cache of decompressed ZFile blocks, shareable by many readers and threads. Sharded
// LRU: each shard has its own mutex so concurrent readers rarely contend.
#pragma once

#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace dadi::blockstore {

class BlockCache {
 public:
  using Value = std::shared_ptr<const std::string>;

  // Holds at most about `capacity_bytes` of block data (at least one block per shard).
  explicit BlockCache(size_t capacity_bytes);
  BlockCache(const BlockCache&) = delete;
  BlockCache& operator=(const BlockCache&) = delete;

  // A fresh owner id; each reader keys its blocks with its own id.
  uint64_t NewId() { return next_id_.fetch_add(1, std::memory_order_relaxed); }

  // The cached block, or null.
  Value Lookup(uint64_t id, uint64_t block);
  void Insert(uint64_t id, uint64_t block, Value value);

  size_t capacity_bytes() const { return capacity_; }

 private:
  static constexpr size_t kShards = 16;
  struct Key {
    uint64_t id;
    uint64_t block;
    bool operator==(const Key& o) const { return id == o.id && block == o.block; }
  };
  struct KeyHash {
    size_t operator()(const Key& k) const {
      uint64_t h = k.id * 0x9E3779B97F4A7C15ull ^ (k.block + 0x632BE59BD9B4E019ull);
      h ^= h >> 29;
      h *= 0xBF58476D1CE4E5B9ull;
      return static_cast<size_t>(h ^ (h >> 32));
    }
  };
  struct Entry {
    Key key;
    Value value;
  };
  struct Shard {
    absl::Mutex mu;
    std::list<Entry> lru ABSL_GUARDED_BY(mu);  // front = most recently used
    std::unordered_map<Key, std::list<Entry>::iterator, KeyHash> map ABSL_GUARDED_BY(mu);
    size_t bytes ABSL_GUARDED_BY(mu) = 0;
  };
  Shard& ShardFor(const Key& k) { return shards_[KeyHash()(k) % kShards]; }

  size_t capacity_;
  size_t shard_capacity_;
  std::atomic<uint64_t> next_id_{1};
  Shard shards_[kShards];
};

}  // namespace dadi::blockstore
