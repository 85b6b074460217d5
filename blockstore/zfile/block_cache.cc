#include "blockstore/zfile/block_cache.h"

namespace dadi::blockstore {

BlockCache::BlockCache(size_t capacity_bytes)
    : capacity_(capacity_bytes), shard_capacity_(capacity_bytes / kShards) {}

BlockCache::Value BlockCache::Lookup(uint64_t id, uint64_t block) {
  Key key{id, block};
  Shard& s = ShardFor(key);
  absl::MutexLock lock(&s.mu);
  auto it = s.map.find(key);
  if (it == s.map.end()) return nullptr;
  s.lru.splice(s.lru.begin(), s.lru, it->second);
  return it->second->value;
}

void BlockCache::Insert(uint64_t id, uint64_t block, Value value) {
  Key key{id, block};
  Shard& s = ShardFor(key);
  absl::MutexLock lock(&s.mu);
  auto it = s.map.find(key);
  if (it != s.map.end()) return;  // Another thread decompressed it first; same bytes.
  s.bytes += value->size();
  s.lru.push_front(Entry{key, std::move(value)});
  s.map.emplace(key, s.lru.begin());
  // Evict from the cold end, always keeping the entry just inserted.
  while (s.bytes > shard_capacity_ && s.lru.size() > 1) {
    Entry& victim = s.lru.back();
    s.bytes -= victim.value->size();
    s.map.erase(victim.key);
    s.lru.pop_back();
  }
}

}  // namespace dadi::blockstore
