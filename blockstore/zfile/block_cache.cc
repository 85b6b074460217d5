#include "blockstore/zfile/block_cache.h"

#include <sys/mman.h>

#include <bit>
#include <cstdlib>
#include <cstring>
#include <new>

namespace dadi::blockstore {

// Fixed-size slots (powers of two from 4 KiB to 64 KiB) carved from 2 MiB chunks that ask for
// transparent huge pages. Freed slots are reused; chunks are returned when the slab goes.
class BlockSlab {
 public:
  static constexpr size_t kChunk = 2 << 20;
  static constexpr int kMinShift = 12, kMaxShift = 16;

  ~BlockSlab() {
    for (void* c : chunks_) ::munmap(c, kChunk);
  }

  char* Allocate(size_t n) {
    int shift = std::max<int>(kMinShift, std::bit_width(n - 1));
    if (n == 0 || shift > kMaxShift) return static_cast<char*>(std::malloc(std::max<size_t>(n, 1)));
    absl::MutexLock lock(&mu_);
    std::vector<char*>& free = free_[shift - kMinShift];
    if (free.empty()) {
      void* c = ::mmap(nullptr, kChunk, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (c == MAP_FAILED) throw std::bad_alloc();
      ::madvise(c, kChunk, MADV_HUGEPAGE);  // advisory: fine if refused
      chunks_.push_back(c);
      for (size_t off = kChunk; off > 0; off -= size_t{1} << shift) {
        free.push_back(static_cast<char*>(c) + off - (size_t{1} << shift));
      }
    }
    char* p = free.back();
    free.pop_back();
    return p;
  }

  void Free(char* p, size_t n) {
    int shift = std::max<int>(kMinShift, std::bit_width(n - 1));
    if (n == 0 || shift > kMaxShift) {
      std::free(p);
      return;
    }
    absl::MutexLock lock(&mu_);
    free_[shift - kMinShift].push_back(p);
  }

 private:
  absl::Mutex mu_;
  std::vector<void*> chunks_ ABSL_GUARDED_BY(mu_);
  std::vector<char*> free_[kMaxShift - kMinShift + 1] ABSL_GUARDED_BY(mu_);
};

CachedBlock::~CachedBlock() { slab_->Free(data_, size_); }

BlockCache::BlockCache(size_t capacity_bytes)
    : capacity_(capacity_bytes),
      shard_capacity_(capacity_bytes / kShards),
      slab_(std::make_shared<BlockSlab>()) {}

std::shared_ptr<CachedBlock> BlockCache::Allocate(size_t n) {
  return std::make_shared<CachedBlock>(slab_->Allocate(n), n, slab_);
}

BlockCache::Value BlockCache::Lookup(uint64_t id, uint64_t block) {
  Key key{id, block};
  Shard& s = shards_[ShardIndex(key)];
  absl::ReaderMutexLock lock(&s.mu);
  auto it = s.map.find(key);
  if (it == s.map.end()) return nullptr;
  Entry& e = s.entries[it->second];
  e.referenced.store(true, std::memory_order_relaxed);
  return e.value;
}

bool BlockCache::CopyOut(uint64_t id, uint64_t block, size_t offset, size_t n, char* dst) {
  Key key{id, block};
  Shard& s = shards_[ShardIndex(key)];
  absl::ReaderMutexLock lock(&s.mu);
  auto it = s.map.find(key);
  if (it == s.map.end()) return false;
  Entry& e = s.entries[it->second];
  if (offset > e.value->size() || n > e.value->size() - offset) return false;
  if (!e.referenced.load(std::memory_order_relaxed)) {
    e.referenced.store(true, std::memory_order_relaxed);
  }
  std::memcpy(dst, e.value->data() + offset, n);
  return true;
}

void BlockCache::EvictOne(Shard& s) {
  // At most two sweeps: the first clears every referenced bit it passes.
  for (size_t steps = 0; steps < 2 * s.entries.size() + 1; ++steps) {
    if (s.hand >= s.entries.size()) s.hand = 0;
    Entry& e = s.entries[s.hand];
    if (e.referenced.load(std::memory_order_relaxed) && steps < 2 * s.entries.size()) {
      e.referenced.store(false, std::memory_order_relaxed);
      ++s.hand;
      continue;
    }
    s.bytes -= e.value->size();
    s.map.erase(e.key);
    if (s.hand != s.entries.size() - 1) {
      e = std::move(s.entries.back());
      s.map[e.key] = static_cast<uint32_t>(s.hand);
    }
    s.entries.pop_back();
    return;
  }
}

void BlockCache::Insert(uint64_t id, uint64_t block, Value value) {
  Key key{id, block};
  Shard& s = shards_[ShardIndex(key)];
  absl::MutexLock lock(&s.mu);
  if (s.map.contains(key)) return;  // Another thread decompressed it first; same bytes.
  while (!s.entries.empty() && s.bytes + value->size() > shard_capacity_) EvictOne(s);
  s.bytes += value->size();
  s.map.emplace(key, static_cast<uint32_t>(s.entries.size()));
  s.entries.emplace_back(key, std::move(value));
}

}  // namespace dadi::blockstore
