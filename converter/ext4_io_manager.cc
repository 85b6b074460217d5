#include "converter/ext4_io_manager.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"

namespace dadi::converter {
namespace {

constexpr absl::string_view kNamePrefix = "dadi-blockdev:";
constexpr uint64_t kUnit = 4096;
// Writes at least this long go straight to the device.
constexpr uint64_t kBypassBytes = 1 << 20;
// Reads at most this long populate the cache (metadata); longer ones (file data) do not.
constexpr uint64_t kCacheReadBytes = 64 << 10;
// Bound of the cache; past it, dirty blocks are flushed and the cache emptied.
constexpr size_t kMaxCachedUnits = (128 << 20) / kUnit;
// Longest single write when flushing coalesced dirty blocks.
constexpr size_t kMaxRunUnits = (4 << 20) / kUnit;

struct CachedUnit {
  std::unique_ptr<char[]> data;
  // What the device holds for this unit, when known and the unit is dirty: a flush skips the
  // write if data is equal again.
  std::unique_ptr<char[]> orig;
  bool dirty = false;
  // data equals the device content (the unit was read, or written through).
  bool clean_known = false;
};

class Channel {
 public:
  explicit Channel(BlockDevice* device) : device_(device) {}

  absl::Status Read(uint64_t off, uint64_t len, char* buf);
  absl::Status Write(uint64_t off, uint64_t len, const char* buf);
  absl::Status FlushDirty();
  absl::Status Sync() {
    if (absl::Status s = FlushDirty(); !s.ok()) return s;
    return device_->Flush();
  }

  std::string last_error;

 private:
  absl::Status CheckRange(uint64_t off, uint64_t len) const {
    if (off > device_->Size() || len > device_->Size() - off) {
      return absl::OutOfRangeError(absl::StrCat("I/O of ", len, " bytes at ", off,
                                                " past the end of ", device_->Name(), " (size ",
                                                device_->Size(), ")"));
    }
    return absl::OkStatus();
  }
  // The cached unit u, loaded from the device if `load` (else zero-filled, not clean_known).
  absl::StatusOr<CachedUnit*> GetUnit(uint64_t u, bool load);
  absl::Status MaybeEvict() {
    if (cache_.size() < kMaxCachedUnits) return absl::OkStatus();
    if (absl::Status s = FlushDirty(); !s.ok()) return s;
    cache_.clear();
    return absl::OkStatus();
  }

  BlockDevice* device_;
  absl::flat_hash_map<uint64_t, CachedUnit> cache_;
};

absl::StatusOr<CachedUnit*> Channel::GetUnit(uint64_t u, bool load) {
  auto [it, inserted] = cache_.try_emplace(u);
  CachedUnit& c = it->second;
  if (inserted) {
    c.data.reset(new char[kUnit]);
    if (load) {
      if (absl::Status s = device_->Pread(u * kUnit, kUnit, c.data.get()); !s.ok()) {
        cache_.erase(it);
        return s;
      }
      c.clean_known = true;
    } else {
      std::memset(c.data.get(), 0, kUnit);
    }
  }
  return &c;
}

absl::Status Channel::Read(uint64_t off, uint64_t len, char* buf) {
  if (absl::Status s = CheckRange(off, len); !s.ok()) return s;
  if (absl::Status s = MaybeEvict(); !s.ok()) return s;
  const bool populate = len <= kCacheReadBytes;
  uint64_t pos = off;
  const uint64_t end = off + len;
  while (pos < end) {
    uint64_t u = pos / kUnit;
    uint64_t in_unit = pos % kUnit;
    uint64_t n = std::min(kUnit - in_unit, end - pos);
    auto it = cache_.find(u);
    if (it != cache_.end()) {
      std::memcpy(buf + (pos - off), it->second.data.get() + in_unit, n);
      pos += n;
      continue;
    }
    if (populate || in_unit != 0 || n != kUnit) {
      absl::StatusOr<CachedUnit*> c = GetUnit(u, /*load=*/true);
      if (!c.ok()) return c.status();
      std::memcpy(buf + (pos - off), (*c)->data.get() + in_unit, n);
      pos += n;
      continue;
    }
    // A run of whole uncached units: read it from the device in one call.
    uint64_t run_end = pos + kUnit;
    while (run_end + kUnit <= end && !cache_.contains(run_end / kUnit)) run_end += kUnit;
    if (absl::Status s = device_->Pread(pos, run_end - pos, buf + (pos - off)); !s.ok()) return s;
    pos = run_end;
  }
  return absl::OkStatus();
}

absl::Status Channel::Write(uint64_t off, uint64_t len, const char* buf) {
  if (absl::Status s = CheckRange(off, len); !s.ok()) return s;
  if (absl::Status s = MaybeEvict(); !s.ok()) return s;
  uint64_t pos = off;
  const uint64_t end = off + len;
  if (len >= kBypassBytes) {
    // Whole units go to the device; cached copies are refreshed so the cache stays coherent.
    uint64_t first = (off + kUnit - 1) / kUnit * kUnit;
    uint64_t last = end / kUnit * kUnit;
    if (first < last) {
      if (absl::Status s =
              device_->Pwrite(first, absl::string_view(buf + (first - off), last - first));
          !s.ok()) {
        return s;
      }
      for (uint64_t p = first; p < last; p += kUnit) {
        auto it = cache_.find(p / kUnit);
        if (it == cache_.end()) continue;
        std::memcpy(it->second.data.get(), buf + (p - off), kUnit);
        it->second.dirty = false;
        it->second.clean_known = true;
        it->second.orig.reset();
      }
      // The unaligned edges, if any, go through the cache below.
      if (absl::Status s = Write(off, first - off, buf); !s.ok()) return s;
      return Write(last, end - last, buf + (last - off));
    }
  }
  while (pos < end) {
    uint64_t u = pos / kUnit;
    uint64_t in_unit = pos % kUnit;
    uint64_t n = std::min(kUnit - in_unit, end - pos);
    absl::StatusOr<CachedUnit*> cu = GetUnit(u, /*load=*/n != kUnit);
    if (!cu.ok()) return cu.status();
    CachedUnit& c = **cu;
    if (!c.dirty && c.clean_known && !c.orig) {
      c.orig.reset(new char[kUnit]);
      std::memcpy(c.orig.get(), c.data.get(), kUnit);
    }
    std::memcpy(c.data.get() + in_unit, buf + (pos - off), n);
    c.dirty = true;
    c.clean_known = false;
    pos += n;
  }
  return absl::OkStatus();
}

absl::Status Channel::FlushDirty() {
  std::vector<uint64_t> dirty;
  for (auto& [u, c] : cache_) {
    if (!c.dirty) continue;
    if (c.orig && std::memcmp(c.orig.get(), c.data.get(), kUnit) == 0) {
      // Changed and changed back: the device already holds these bytes.
      c.dirty = false;
      c.clean_known = true;
      c.orig.reset();
      continue;
    }
    dirty.push_back(u);
  }
  std::sort(dirty.begin(), dirty.end());
  std::vector<char> run;
  size_t i = 0;
  while (i < dirty.size()) {
    size_t j = i + 1;
    while (j < dirty.size() && dirty[j] == dirty[j - 1] + 1 && j - i < kMaxRunUnits) ++j;
    run.resize((j - i) * kUnit);
    for (size_t k = i; k < j; ++k) {
      std::memcpy(run.data() + (k - i) * kUnit, cache_[dirty[k]].data.get(), kUnit);
    }
    if (absl::Status s =
            device_->Pwrite(dirty[i] * kUnit, absl::string_view(run.data(), run.size()));
        !s.ok()) {
      return s;
    }
    for (size_t k = i; k < j; ++k) {
      CachedUnit& c = cache_[dirty[k]];
      c.dirty = false;
      c.clean_known = true;
      c.orig.reset();
    }
    i = j;
  }
  return absl::OkStatus();
}

Channel* GetChannel(io_channel channel) { return static_cast<Channel*>(channel->private_data); }

errcode_t Fail(io_channel channel, const absl::Status& s, errcode_t code) {
  GetChannel(channel)->last_error = s.ToString();
  return code;
}

uint64_t ByteCount(io_channel channel, int count) {
  // A negative count is a byte count (libext2fs convention).
  return count < 0 ? static_cast<uint64_t>(-static_cast<int64_t>(count))
                   : static_cast<uint64_t>(count) * static_cast<uint64_t>(channel->block_size);
}

errcode_t DevOpen(const char* name, int flags, io_channel* out);

errcode_t DevClose(io_channel channel) {
  if (--channel->refcount > 0) return 0;
  Channel* c = GetChannel(channel);
  errcode_t ret = 0;
  if (c != nullptr) {
    // ext2fs_close flushed already; this catches a caller that closes without flushing.
    if (absl::Status s = c->FlushDirty(); !s.ok()) {
      std::fprintf(stderr, "dadi: flushing ext4 channel at close: %s\n", s.ToString().c_str());
      ret = EXT2_ET_SHORT_WRITE;
    }
    delete c;
  }
  ext2fs_free_mem(&channel->name);
  ext2fs_free_mem(&channel);
  return ret;
}

errcode_t DevSetBlksize(io_channel channel, int blksize) {
  if (blksize <= 0 || blksize % BlockDevice::kSectorSize != 0) return EXT2_ET_INVALID_ARGUMENT;
  channel->block_size = blksize;
  return 0;
}

errcode_t DevRead64(io_channel channel, unsigned long long block, int count, void* data) {
  uint64_t off = static_cast<uint64_t>(block) * static_cast<uint64_t>(channel->block_size);
  absl::Status s =
      GetChannel(channel)->Read(off, ByteCount(channel, count), static_cast<char*>(data));
  return s.ok() ? 0 : Fail(channel, s, EXT2_ET_SHORT_READ);
}

errcode_t DevWrite64(io_channel channel, unsigned long long block, int count, const void* data) {
  uint64_t off = static_cast<uint64_t>(block) * static_cast<uint64_t>(channel->block_size);
  absl::Status s =
      GetChannel(channel)->Write(off, ByteCount(channel, count), static_cast<const char*>(data));
  return s.ok() ? 0 : Fail(channel, s, EXT2_ET_SHORT_WRITE);
}

errcode_t DevRead(io_channel channel, unsigned long block, int count, void* data) {
  return DevRead64(channel, block, count, data);
}

errcode_t DevWrite(io_channel channel, unsigned long block, int count, const void* data) {
  return DevWrite64(channel, block, count, data);
}

errcode_t DevFlush(io_channel channel) {
  absl::Status s = GetChannel(channel)->Sync();
  return s.ok() ? 0 : Fail(channel, s, EXT2_ET_SHORT_WRITE);
}

errcode_t DevSetOption(io_channel, const char*, const char*) { return EXT2_ET_INVALID_ARGUMENT; }

errcode_t DevDiscard(io_channel, unsigned long long, unsigned long long) {
  return EXT2_ET_UNIMPLEMENTED;
}

errcode_t DevCacheReadahead(io_channel, unsigned long long, unsigned long long) {
  return EXT2_ET_OP_NOT_SUPPORTED;
}

errcode_t DevZeroout(io_channel, unsigned long long, unsigned long long) {
  // ext2fs_zero_blocks2 falls back to writing zeros, which goes through the cache.
  return EXT2_ET_UNIMPLEMENTED;
}

const struct struct_io_manager kManager = {
    .magic = EXT2_ET_MAGIC_IO_MANAGER,
    .name = "dadi BlockDevice I/O manager",
    .open = DevOpen,
    .close = DevClose,
    .set_blksize = DevSetBlksize,
    .read_blk = DevRead,
    .write_blk = DevWrite,
    .flush = DevFlush,
    .write_byte = nullptr,
    .set_option = DevSetOption,
    .get_stats = nullptr,
    .read_blk64 = DevRead64,
    .write_blk64 = DevWrite64,
    .discard = DevDiscard,
    .cache_readahead = DevCacheReadahead,
    .zeroout = DevZeroout,
    .reserved = {},
};

errcode_t DevOpen(const char* name, int /*flags*/, io_channel* out) {
  absl::string_view n(name == nullptr ? "" : name);
  if (!absl::ConsumePrefix(&n, kNamePrefix)) return EXT2_ET_BAD_DEVICE_NAME;
  uint64_t address = 0;
  if (!absl::SimpleHexAtoi(n, &address) || address == 0) return EXT2_ET_BAD_DEVICE_NAME;
  auto* device = reinterpret_cast<BlockDevice*>(static_cast<uintptr_t>(address));
  if (device->Size() % kUnit != 0) return EXT2_ET_INVALID_ARGUMENT;

  io_channel io = nullptr;
  errcode_t ret = ext2fs_get_memzero(sizeof(struct struct_io_channel), &io);
  if (ret) return ret;
  ret = ext2fs_get_mem(std::strlen(name) + 1, &io->name);
  if (ret) {
    ext2fs_free_mem(&io);
    return ret;
  }
  std::strcpy(io->name, name);
  io->magic = EXT2_ET_MAGIC_IO_CHANNEL;
  io->manager = const_cast<io_manager>(&kManager);
  io->block_size = 1024;
  io->refcount = 1;
  io->private_data = new (std::nothrow) Channel(device);
  if (io->private_data == nullptr) {
    ext2fs_free_mem(&io->name);
    ext2fs_free_mem(&io);
    return EXT2_ET_NO_MEMORY;
  }
  *out = io;
  return 0;
}

}  // namespace

io_manager BlockDeviceIoManager() { return const_cast<io_manager>(&kManager); }

std::string Ext4IoChannelName(BlockDevice* device) {
  return absl::StrCat(kNamePrefix, absl::Hex(reinterpret_cast<uintptr_t>(device)));
}

std::string Ext4IoChannelLastError(io_channel channel) {
  if (channel == nullptr || channel->manager != &kManager || channel->private_data == nullptr) {
    return "";
  }
  return GetChannel(channel)->last_error;
}

}  // namespace dadi::converter
