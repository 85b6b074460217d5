#include "blockstore/remote/node_cache.h"
#include "blockstore/file/fd_io.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <tuple>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "blockstore/remote/digest.h"
#include "spdlog/spdlog.h"

namespace dadi::blockstore {
namespace {

constexpr char kMapMagic[8] = {'D', 'A', 'D', 'I', 'U', 'M', 'A', 'P'};
constexpr uint32_t kMapVersion = 1;
constexpr size_t kMapHeaderSize = 32;

absl::Status Errno(absl::string_view what, absl::string_view path) {
  int err = errno;
  return absl::InternalError(
      absl::StrCat("node cache: ", what, " ", path, ": ", std::strerror(err)));
}

std::string EncodeHeader(uint64_t unit, uint64_t size) {
  std::string h(kMapHeaderSize, '\0');
  std::memcpy(h.data(), kMapMagic, 8);
  uint32_t version = kMapVersion;
  uint32_t unit32 = static_cast<uint32_t>(unit);
  std::memcpy(h.data() + 8, &version, 4);
  std::memcpy(h.data() + 12, &unit32, 4);
  std::memcpy(h.data() + 16, &size, 8);
  return h;
}

// Reads a map header: {unit, size}; false when it is not one of ours.
bool DecodeHeader(const char* h, uint64_t* unit, uint64_t* size) {
  if (std::memcmp(h, kMapMagic, 8) != 0) return false;
  uint32_t version, unit32;
  std::memcpy(&version, h + 8, 4);
  std::memcpy(&unit32, h + 12, 4);
  std::memcpy(size, h + 16, 8);
  *unit = unit32;
  return version == kMapVersion && unit32 >= 4096 && (unit32 & (unit32 - 1)) == 0 &&
         *size < (uint64_t{1} << 50);
}

void FsyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// CachedBlob

CachedBlob::CachedBlob(NodeCache* cache, std::string digest, uint64_t size, uint64_t unit,
                       std::string dir)
    : cache_(cache),
      digest_(std::move(digest)),
      size_(size),
      unit_(unit),
      nunits_((size + unit - 1) / unit),
      dir_(std::move(dir)) {}

CachedBlob::~CachedBlob() {
  if (!data_fd_.valid() || !map_fd_.valid()) return;
  if (absl::Status s = Flush(); !s.ok()) {
    spdlog::warn("node cache: flushing {}: {}", digest_, std::string(s.message()));
  }
}

absl::Status CachedBlob::Flush() {
  absl::MutexLock flush_lock(&flush_mu_);
  std::vector<std::pair<uint64_t, uint32_t>> batch;
  {
    absl::MutexLock lock(&mu_);
    batch.swap(pending_);
    pending_bytes_ = 0;
  }
  if (batch.empty()) return absl::OkStatus();
  // Data first: only units whose bytes are durable get their bit on disk.
  if (::fdatasync(data_fd_.get()) != 0) {
    absl::Status s = Errno("fdatasync", dir_ + "/data");
    absl::MutexLock lock(&mu_);
    pending_.insert(pending_.end(), batch.begin(), batch.end());
    return s;
  }
  absl::MutexLock lock(&mu_);
  std::vector<uint64_t> bytes;
  for (const auto& [u, gen] : batch) {
    // Evicted (and maybe refetched) since: that fetch's bytes are not the ones just synced.
    if (gen != generation_[u] || !TestBit(u)) continue;
    SetDiskBit(u, true);
    if (bytes.empty() || bytes.back() != u / 8) bytes.push_back(u / 8);
  }
  for (uint64_t b : bytes) {
    if (absl::Status s = WriteMapByte(b * 8); !s.ok()) return s;
  }
  return absl::OkStatus();
}

uint64_t CachedBlob::UnitBytes(uint64_t u) const { return std::min(unit_, size_ - u * unit_); }

absl::Status CachedBlob::Load() {
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec) return absl::InternalError(absl::StrCat("node cache: mkdir ", dir_, ": ", ec.message()));
  std::string data_path = dir_ + "/data", map_path = dir_ + "/map";
  data_fd_.reset(::open(data_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!data_fd_.valid()) return Errno("open", data_path);
  map_fd_.reset(::open(map_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!map_fd_.valid()) return Errno("open", map_path);
  absl::MutexLock lock(&mu_);
  bits_.assign((nunits_ + 7) / 8, 0);
  last_access_.assign(nunits_, 0);
  generation_.assign(nunits_, 0);
  struct stat st;
  bool ok = ::fstat(data_fd_.get(), &st) == 0 && static_cast<uint64_t>(st.st_size) == size_;
  char header[kMapHeaderSize];
  uint64_t unit = 0, size = 0;
  ok = ok && PreadFull(map_fd_.get(), header, kMapHeaderSize, 0, map_path).ok() &&
       DecodeHeader(header, &unit, &size) && unit == unit_ && size == size_;
  ok = ok && (bits_.empty() || PreadFull(map_fd_.get(), reinterpret_cast<char*>(bits_.data()),
                                         bits_.size(), kMapHeaderSize, map_path)
                                   .ok());
  if (!ok) {
    mu_.Unlock();
    absl::Status s = Reset();
    mu_.Lock();
    return s;
  }
  // Bits past the last unit must be clear.
  if (nunits_ % 8 != 0) bits_.back() &= static_cast<uint8_t>((1u << (nunits_ % 8)) - 1);
  disk_bits_ = bits_;
  present_ = 0;
  uint64_t bytes = 0;
  for (uint64_t u = 0; u < nunits_; ++u) {
    if (TestBit(u)) {
      ++present_;
      bytes += UnitBytes(u);
    }
  }
  cache_->used_bytes_.fetch_add(bytes);
  verified_ = present_ == nunits_ && ::access((dir_ + "/verified").c_str(), F_OK) == 0;
  return absl::OkStatus();
}

absl::Status CachedBlob::Reset() {
  absl::MutexLock lock(&mu_);
  std::string data_path = dir_ + "/data", map_path = dir_ + "/map";
  ::unlink((dir_ + "/verified").c_str());
  // The map first: a crash in between leaves bits clear over whatever data remains.
  std::string header = EncodeHeader(unit_, size_);
  header.append((nunits_ + 7) / 8, '\0');
  if (::ftruncate(map_fd_.get(), 0) != 0) return Errno("truncate", map_path);
  if (absl::Status s = PwriteFull(map_fd_.get(), header.data(), header.size(), 0, map_path);
      !s.ok())
    return s;
  if (::fdatasync(map_fd_.get()) != 0) return Errno("fdatasync", map_path);
  if (::ftruncate(data_fd_.get(), 0) != 0 ||
      ::ftruncate(data_fd_.get(), static_cast<off_t>(size_)) != 0) {
    return Errno("truncate", data_path);
  }
  bits_.assign((nunits_ + 7) / 8, 0);
  disk_bits_ = bits_;
  pending_.clear();
  pending_bytes_ = 0;
  present_ = 0;
  verified_ = false;
  return absl::OkStatus();
}

absl::Status CachedBlob::WriteMapByte(uint64_t u) {
  return PwriteFull(map_fd_.get(), reinterpret_cast<const char*>(&disk_bits_[u / 8]), 1,
                    kMapHeaderSize + u / 8, dir_ + "/map");
}

absl::Status CachedBlob::PreadData(uint64_t offset, size_t n, char* buf) const {
  return PreadFull(data_fd_.get(), buf, n, offset, dir_ + "/data");
}

bool CachedBlob::verified() const {
  absl::MutexLock lock(&mu_);
  return verified_;
}

uint64_t CachedBlob::PresentUnits() const {
  absl::MutexLock lock(&mu_);
  return present_;
}

bool CachedBlob::Complete() const {
  absl::MutexLock lock(&mu_);
  return present_ == nunits_;
}

absl::Status CachedBlob::FetchRun(uint64_t first, uint64_t count, const UnitFetcher& fetch) {
  uint64_t offset = first * unit_;
  uint64_t len = std::min(count * unit_, size_ - offset);
  std::unique_ptr<char[]> buf(new char[len]);  // not zero-filled: the fetch fills it all
  const absl::Time start = absl::Now();
  absl::Status s = fetch(offset, len, buf.get());
  spdlog::trace("node cache: fetched {} {}+{}: {:.2f} ms", digest_, offset, len,
                absl::ToDoubleMilliseconds(absl::Now() - start));
  cache_->fetch_requests_.fetch_add(1, std::memory_order_relaxed);
  return StoreRun(first, count, std::move(s), buf.get());
}

absl::Status CachedBlob::StoreRun(uint64_t first, uint64_t count, absl::Status s,
                                  const char* data) {
  const uint64_t offset = first * unit_;
  const uint64_t len = std::min(count * unit_, size_ - offset);
  if (s.ok()) {
    s = PwriteFull(data_fd_.get(), data, len, offset, dir_ + "/data");
  }
  // The bytes are readable now (page cache); they become durable, and only then get their map
  // bits, in the next Flush.
  bool flush = false;
  {
    absl::MutexLock lock(&mu_);
    if (s.ok()) {
      for (uint64_t u = first; u < first + count; ++u) {
        if (!TestBit(u)) {
          bits_[u / 8] |= static_cast<uint8_t>(1u << (u % 8));
          ++present_;
          cache_->used_bytes_.fetch_add(UnitBytes(u), std::memory_order_relaxed);
        }
        pending_.emplace_back(u, generation_[u]);
      }
      pending_bytes_ += len;
      flush = pending_bytes_ >= cache_->options_.flush_bytes;
      cache_->miss_units_.fetch_add(count, std::memory_order_relaxed);
      cache_->fetched_bytes_.fetch_add(len, std::memory_order_relaxed);
    }
    for (uint64_t u = first; u < first + count; ++u) {
      auto it = inflight_.find(u);
      if (it == inflight_.end()) continue;
      it->second->status = s;
      it->second->done.Notify();
      inflight_.erase(it);
    }
  }
  if (flush) cache_->RequestFlush();
  return s;
}

absl::Status CachedBlob::Prefetch(const std::vector<ByteRange>& ranges, const RangesFetcher& fetch,
                                  size_t max_runs) {
  struct Run {
    uint64_t first;
    uint64_t count;
  };
  std::vector<Run> runs;
  {
    absl::MutexLock lock(&mu_);
    const uint64_t tick = cache_->Tick();
    for (const ByteRange& r : ranges) {
      if (r.length == 0 || r.offset >= size_) continue;
      const uint64_t last = (std::min(r.offset + r.length, size_) - 1) / unit_;
      for (uint64_t u = r.offset / unit_; u <= last; ++u) {
        last_access_[u] = tick;
        if (TestBit(u) || inflight_.count(u) != 0) continue;
        inflight_[u] = std::make_shared<Inflight>();
        if (!runs.empty() && runs.back().first + runs.back().count == u) {
          ++runs.back().count;
        } else {
          runs.push_back(Run{u, 1});
        }
      }
    }
  }
  max_runs = std::max<size_t>(max_runs, 1);
  absl::Status first_error;
  std::string buf;
  for (size_t i = 0; i < runs.size(); i += max_runs) {
    const size_t j = std::min(runs.size(), i + max_runs);
    std::vector<ByteRange> want;
    uint64_t total = 0;
    for (size_t k = i; k < j; ++k) {
      const uint64_t offset = runs[k].first * unit_;
      want.push_back(ByteRange{offset, std::min(runs[k].count * unit_, size_ - offset)});
      total += want.back().length;
    }
    // Once a fetch failed, the remaining claims are released with its error: their readers
    // fetch them themselves.
    absl::Status s = first_error;
    if (s.ok()) {
      buf.resize(total);
      const absl::Time start = absl::Now();
      s = fetch(want, buf.data());
      spdlog::trace("node cache: prefetched {} runs of {} ({} bytes): {:.2f} ms", j - i, digest_,
                    total, absl::ToDoubleMilliseconds(absl::Now() - start));
      cache_->fetch_requests_.fetch_add(1, std::memory_order_relaxed);
    }
    uint64_t at = 0;
    for (size_t k = i; k < j; ++k) {
      absl::Status stored = StoreRun(runs[k].first, runs[k].count, s, buf.data() + at);
      at += want[k - i].length;
      if (!stored.ok() && first_error.ok()) first_error = stored;
    }
  }
  return first_error;
}

absl::Status CachedBlob::EnsureLocked(uint64_t first, uint64_t last, uint64_t window,
                                      const UnitFetcher& fetch) {
  absl::Status last_error;
  for (int pass = 0; pass < 3; ++pass) {
    std::vector<std::shared_ptr<Inflight>> waits;
    std::vector<uint64_t> claimed;
    uint64_t ahead_first = 0, ahead_count = 0;
    {
      absl::MutexLock lock(&mu_);
      uint64_t tick = cache_->Tick();
      for (uint64_t u = first; u <= last; ++u) {
        last_access_[u] = tick;
        if (TestBit(u)) continue;
        auto it = inflight_.find(u);
        if (it != inflight_.end()) {
          waits.push_back(it->second);
        } else {
          inflight_[u] = std::make_shared<Inflight>();
          claimed.push_back(u);
        }
      }
      // The rest of the fetch windows a miss falls in, as far as they are missing and
      // continue the run being fetched.
      const uint64_t per_fetch = cache_->fetch_units_;
      if (pass == 0 && per_fetch > 1 && !claimed.empty()) {
        std::vector<uint64_t> before;
        if (claimed.front() == first) {
          for (uint64_t u = first; u > first - first % per_fetch;) {
            --u;
            if (TestBit(u) || inflight_.count(u) != 0) break;
            before.push_back(u);
          }
        }
        if (claimed.back() == last) {
          const uint64_t end = std::min(nunits_, (last / per_fetch + 1) * per_fetch);
          for (uint64_t u = last + 1; u < end && !TestBit(u) && inflight_.count(u) == 0; ++u) {
            claimed.push_back(u);
          }
        }
        claimed.insert(claimed.begin(), before.rbegin(), before.rend());
        for (uint64_t u : claimed) {
          last_access_[u] = tick;
          if (inflight_.count(u) == 0) inflight_[u] = std::make_shared<Inflight>();
        }
      }
      // Readahead: the first missing unit within the window after this read; claim a window's
      // worth of missing units from it for a background fetch (two may be in flight).
      if (pass == 0 && window > 0 && readaheads_running_ < 2 && last + 1 < nunits_) {
        uint64_t limit = std::min(nunits_ - 1, last + window);
        uint64_t m = last + 1;
        while (m <= limit && (TestBit(m) || inflight_.count(m) != 0)) ++m;
        if (m <= limit) {
          uint64_t end = std::min(nunits_ - 1, m + window - 1);
          uint64_t u = m;
          for (; u <= end && !TestBit(u) && inflight_.count(u) == 0; ++u) {
            last_access_[u] = tick;
            inflight_[u] = std::make_shared<Inflight>();
          }
          ahead_first = m;
          ahead_count = u - m;
          if (ahead_count > 0) ++readaheads_running_;
        }
      }
    }
    if (ahead_count > 0) {
      // The background fetch writes only units it claimed (never present ones), so it needs no
      // evict_mu_: eviction and invalidation only touch present units.
      std::shared_ptr<CachedBlob> self = shared_from_this();
      UnitFetcher f = fetch;
      cache_->RunAsync([self, f, ahead_first, ahead_count] {
        absl::Status s = self->FetchRun(ahead_first, ahead_count, f);
        if (!s.ok()) {
          spdlog::debug("node cache: readahead of {} units {}+{}: {}", self->digest_, ahead_first,
                        ahead_count, std::string(s.message()));
        }
        absl::MutexLock lock(&self->mu_);
        --self->readaheads_running_;
      });
    }
    if (claimed.empty() && waits.empty()) return absl::OkStatus();
    // Fetch our claims as contiguous runs, one request each.
    absl::Status own;
    for (size_t i = 0; i < claimed.size();) {
      size_t j = i + 1;
      while (j < claimed.size() && claimed[j] == claimed[j - 1] + 1) ++j;
      absl::Status s = FetchRun(claimed[i], j - i, fetch);
      if (!s.ok() && own.ok()) own = s;
      i = j;
    }
    if (!own.ok()) return own;
    bool retry = false;
    for (const auto& w : waits) {
      cache_->coalesced_waits_.fetch_add(1, std::memory_order_relaxed);
      w->done.WaitForNotification();
      if (!w->status.ok()) {
        retry = true;
        last_error = w->status;
      }
    }
    if (!retry) return absl::OkStatus();
  }
  return last_error;
}

absl::Status CachedBlob::EnsureUnits(uint64_t first, uint64_t last, const UnitFetcher& fetch) {
  if (nunits_ == 0) return absl::OkStatus();
  last = std::min(last, nunits_ - 1);
  if (first > last) return absl::OkStatus();
  absl::ReaderMutexLock lock(&evict_mu_);
  return EnsureLocked(first, last, 0, fetch);
}

absl::StatusOr<size_t> CachedBlob::Read(uint64_t offset, size_t n, char* buf,
                                        const UnitFetcher& fetch, uint64_t max_readahead) {
  if (offset >= size_ || n == 0) return 0;
  n = static_cast<size_t>(std::min<uint64_t>(n, size_ - offset));
  {
    absl::ReaderMutexLock evict_lock(&evict_mu_);
    uint64_t first = offset / unit_, last = (offset + n - 1) / unit_;
    uint64_t window = 0;
    bool all_present = true;
    {
      absl::MutexLock lock(&mu_);
      if (!verified_) {
        // Readahead is earned the kernel's way: only a run of sequential reads gets it, and
        // the window is as large as the run so far (up to max_readahead). Reading a small file
        // fetches nothing beyond it; a scan of a large one fetches ahead what it already read.
        // One large read alone is no run (a prefetch asks for exactly what it wants).
        const bool continues = offset == next_expected_;
        sequential_run_ = continues ? sequential_run_ + n : n;
        if (continues && sequential_run_ >= kReadaheadMinRun) {
          window = std::min(max_readahead, sequential_run_) / unit_;
        }
        uint64_t hits = 0;
        for (uint64_t u = first; u <= last; ++u) {
          if (TestBit(u)) {
            ++hits;
          } else {
            all_present = false;
          }
        }
        cache_->hit_units_.fetch_add(hits, std::memory_order_relaxed);
      }
      next_expected_ = offset + n;
    }
    if (all_present) cache_->hit_bytes_.fetch_add(n, std::memory_order_relaxed);
    if (absl::Status s = EnsureLocked(first, last, window, fetch); !s.ok()) return s;
    if (absl::Status s = PreadData(offset, n, buf); !s.ok()) return s;
  }
  // Outside evict_mu_: this blob's own units may be the least recently used.
  cache_->MaybeEvict();
  return n;
}

absl::StatusOr<uint64_t> CachedBlob::EvictUnitsLocked(const std::vector<uint64_t>& units) {
  std::vector<uint64_t> evicted;
  {
    absl::MutexLock lock(&mu_);
    if (verified_) {
      ::unlink((dir_ + "/verified").c_str());
      FsyncDir(dir_);
      verified_ = false;
    }
    for (uint64_t u : units) {
      if (u >= nunits_ || !TestBit(u)) continue;
      bits_[u / 8] &= static_cast<uint8_t>(~(1u << (u % 8)));
      ++generation_[u];
      SetDiskBit(u, false);
      if (absl::Status s = WriteMapByte(u); !s.ok()) return s;
      evicted.push_back(u);
    }
  }
  // Bits durably clear before the bytes go.
  if (::fdatasync(map_fd_.get()) != 0) return Errno("fdatasync", dir_ + "/map");
  uint64_t freed = 0;
  for (uint64_t u : evicted) {
    if (::fallocate(data_fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                    static_cast<off_t>(u * unit_), static_cast<off_t>(UnitBytes(u))) != 0) {
      spdlog::warn("node cache: punching unit {} of {}: {}", u, digest_, std::strerror(errno));
    }
    freed += UnitBytes(u);
  }
  {
    absl::MutexLock lock(&mu_);
    present_ -= evicted.size();
  }
  cache_->used_bytes_.fetch_sub(freed, std::memory_order_relaxed);
  cache_->evicted_units_.fetch_add(evicted.size(), std::memory_order_relaxed);
  return freed;
}

absl::Status CachedBlob::Invalidate(uint64_t offset, uint64_t len) {
  if (len == 0 || offset >= size_) return absl::OkStatus();
  len = std::min(len, size_ - offset);
  absl::WriterMutexLock lock(&evict_mu_);
  std::vector<uint64_t> units;
  for (uint64_t u = offset / unit_; u <= (offset + len - 1) / unit_; ++u) units.push_back(u);
  absl::StatusOr<uint64_t> freed = EvictUnitsLocked(units);
  return freed.status();
}

absl::Status CachedBlob::Discard() {
  absl::WriterMutexLock lock(&evict_mu_);
  std::vector<uint64_t> units(nunits_);
  for (uint64_t u = 0; u < nunits_; ++u) units[u] = u;
  return EvictUnitsLocked(units).status();
}

absl::Status CachedBlob::VerifyAndMark() {
  absl::ReaderMutexLock lock(&evict_mu_);
  if (absl::Status s = Flush(); !s.ok()) return s;
  if (!Complete()) {
    return absl::FailedPreconditionError(
        absl::StrCat("node cache: ", digest_, " is not complete, cannot verify"));
  }
  if (!absl::StartsWith(digest_, "sha256:")) {
    return absl::UnimplementedError(absl::StrCat("node cache: cannot verify ", digest_));
  }
  Sha256 h;
  std::string buf(4 << 20, '\0');
  for (uint64_t off = 0; off < size_; off += buf.size()) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), size_ - off));
    if (absl::Status s = PreadData(off, n, buf.data()); !s.ok()) return s;
    h.Update(absl::string_view(buf.data(), n));
  }
  std::string got = h.Finish();
  if (got != digest_) {
    return absl::DataLossError(
        absl::StrCat("blob ", digest_, ": downloaded content has digest ", got));
  }
  std::string marker = dir_ + "/verified";
  UniqueFd fd(::open(marker.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd.valid()) return Errno("create", marker);
  // The map's bits must be on disk too before the marker claims the whole blob.
  if (::fdatasync(map_fd_.get()) != 0 || ::fsync(fd.get()) != 0) return Errno("fsync", marker);
  {
    absl::MutexLock l(&mu_);
    if (disk_bits_ != bits_) {
      ::unlink(marker.c_str());
      return absl::FailedPreconditionError(
          absl::StrCat("node cache: ", digest_, " changed while it was verified"));
    }
  }
  fd.reset();
  FsyncDir(dir_);
  absl::MutexLock l(&mu_);
  verified_ = true;
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// NodeCache

absl::StatusOr<std::shared_ptr<NodeCache>> NodeCache::Open(NodeCacheOptions options) {
  if (options.root.empty()) return absl::InvalidArgumentError("node cache: no root directory");
  if (options.unit_size < 4096 || (options.unit_size & (options.unit_size - 1)) != 0 ||
      options.unit_size > (uint64_t{1} << 30)) {
    return absl::InvalidArgumentError(absl::StrCat("node cache: unit size ", options.unit_size,
                                                   " is not a power of two in [4 KiB, 1 GiB]"));
  }
  if (options.fetch_size % options.unit_size != 0 || options.fetch_size > (uint64_t{64} << 20)) {
    return absl::InvalidArgumentError(absl::StrCat("node cache: fetch size ", options.fetch_size,
                                                   " is not a multiple of the unit size ",
                                                   options.unit_size, " up to 64 MiB"));
  }
  std::error_code ec;
  std::filesystem::create_directories(options.root + "/blobs", ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("node cache: mkdir ", options.root, "/blobs: ", ec.message()));
  }
  ::chmod(options.root.c_str(), 0700);
  std::shared_ptr<NodeCache> cache(new NodeCache(options));
  NodeCache* raw = cache.get();
  cache->flusher_ = std::thread([raw] { raw->FlushLoop(); });
  // Load every blob already cached so usage and eviction see them.
  for (const auto& algo : std::filesystem::directory_iterator(options.root + "/blobs", ec)) {
    if (!algo.is_directory()) continue;
    for (const auto& entry : std::filesystem::directory_iterator(algo.path(), ec)) {
      std::string digest =
          absl::StrCat(algo.path().filename().string(), ":", entry.path().filename().string());
      std::string map_path = entry.path().string() + "/map";
      UniqueFd fd(::open(map_path.c_str(), O_RDONLY | O_CLOEXEC));
      char header[kMapHeaderSize];
      uint64_t unit = 0, size = 0;
      bool ok = IsValidDigest(digest) && fd.valid() &&
                PreadFull(fd.get(), header, kMapHeaderSize, 0, map_path).ok() &&
                DecodeHeader(header, &unit, &size) && unit == options.unit_size;
      if (!ok) {
        spdlog::warn("node cache: removing unusable entry {}", entry.path().string());
        std::filesystem::remove_all(entry.path(), ec);
        continue;
      }
      std::shared_ptr<CachedBlob> blob(
          new CachedBlob(cache.get(), digest, size, unit, entry.path().string()));
      if (absl::Status s = blob->Load(); !s.ok()) return s;
      absl::MutexLock lock(&cache->mu_);
      cache->blobs_[digest] = std::move(blob);
    }
  }
  return cache;
}

void NodeCache::RunAsync(std::function<void()> fn) {
  std::shared_ptr<AsyncState> state = async_;
  {
    absl::MutexLock lock(&state->mu);
    ++state->outstanding;
  }
  std::thread([state, fn = std::move(fn)]() mutable {
    fn();
    fn = nullptr;  // drop captures (blob references) before the cache may go away
    absl::MutexLock lock(&state->mu);
    --state->outstanding;
  }).detach();
}

NodeCache::~NodeCache() {
  {
    std::shared_ptr<AsyncState> state = async_;
    absl::MutexLock lock(&state->mu);
    state->mu.Await(absl::Condition(
        +[](int* n) { return *n == 0; }, &state->outstanding));
  }
  {
    absl::MutexLock lock(&flush_q_mu_);
    stopping_ = true;
    flush_cv_.Signal();
  }
  if (flusher_.joinable()) flusher_.join();
  // The blobs flush themselves as they are destroyed.
}

void NodeCache::RequestFlush() {
  absl::MutexLock lock(&flush_q_mu_);
  flush_requested_ = true;
  flush_cv_.Signal();
}

void NodeCache::FlushLoop() {
  while (true) {
    {
      absl::MutexLock lock(&flush_q_mu_);
      if (!flush_requested_ && !stopping_)
        flush_cv_.WaitWithTimeout(&flush_q_mu_, options_.flush_interval);
      if (stopping_) return;
      flush_requested_ = false;
    }
    if (absl::Status s = Flush(); !s.ok()) {
      spdlog::warn("node cache: background flush: {}", std::string(s.message()));
    }
  }
}

absl::Status NodeCache::Flush() {
  std::vector<std::shared_ptr<CachedBlob>> blobs;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [digest, blob] : blobs_) blobs.push_back(blob);
  }
  absl::Status first;
  for (const auto& b : blobs) {
    absl::Status s = b->Flush();
    if (first.ok()) first = s;
  }
  return first;
}

absl::StatusOr<std::shared_ptr<CachedBlob>> NodeCache::Blob(absl::string_view digest,
                                                            uint64_t size) {
  if (absl::Status s = CheckDigest(digest, "node cache"); !s.ok()) return s;
  std::string key(digest);
  absl::MutexLock lock(&mu_);
  auto it = blobs_.find(key);
  if (it != blobs_.end()) {
    if (it->second->size() == size) return it->second;
    if (it->second.use_count() > 1) {
      return absl::FailedPreconditionError(absl::StrCat("node cache: ", key, " is open with size ",
                                                        it->second->size(), ", asked for size ",
                                                        size));
    }
    used_bytes_.fetch_sub(
        std::min<uint64_t>(used_bytes_.load(), it->second->PresentUnits() * options_.unit_size));
    blobs_.erase(it);
  }
  size_t colon = key.find(':');
  std::string dir =
      absl::StrCat(options_.root, "/blobs/", key.substr(0, colon), "/", key.substr(colon + 1));
  std::shared_ptr<CachedBlob> blob(new CachedBlob(this, key, size, options_.unit_size, dir));
  if (absl::Status s = blob->Load(); !s.ok()) return s;
  blobs_[key] = blob;
  return blob;
}

void NodeCache::Pin(absl::string_view digest) {
  absl::MutexLock lock(&mu_);
  ++pins_[std::string(digest)];
}

void NodeCache::Unpin(absl::string_view digest) {
  absl::MutexLock lock(&mu_);
  auto it = pins_.find(std::string(digest));
  if (it != pins_.end() && --it->second <= 0) pins_.erase(it);
}

void NodeCache::MaybeEvict() {
  if (options_.size_limit == 0 || used_bytes_.load() <= options_.size_limit) return;
  if (absl::Status s = EnforceLimit(); !s.ok()) {
    spdlog::warn("node cache: eviction failed: {}", std::string(s.message()));
  }
}

absl::Status NodeCache::EnforceLimit() {
  if (options_.size_limit == 0 || used_bytes_.load() <= options_.size_limit) {
    return absl::OkStatus();
  }
  if (!evict_run_mu_.TryLock()) return absl::OkStatus();  // another thread is evicting
  struct Unlock {
    absl::Mutex* m;
    ~Unlock() { m->Unlock(); }
  } unlock{&evict_run_mu_};
  std::vector<std::shared_ptr<CachedBlob>> candidates;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [digest, blob] : blobs_) {
      if (pins_.count(digest) == 0) candidates.push_back(blob);
    }
  }
  std::vector<std::tuple<uint64_t, size_t, uint64_t>> units;  // (tick, blob index, unit)
  for (size_t i = 0; i < candidates.size(); ++i) {
    CachedBlob& b = *candidates[i];
    absl::MutexLock lock(&b.mu_);
    for (uint64_t u = 0; u < b.nunits_; ++u) {
      if (b.TestBit(u)) units.emplace_back(b.last_access_[u], i, u);
    }
  }
  std::sort(units.begin(), units.end());
  uint64_t target =
      static_cast<uint64_t>(static_cast<double>(options_.size_limit) * options_.low_watermark);
  uint64_t used = used_bytes_.load();
  std::map<size_t, std::vector<uint64_t>> chosen;
  for (const auto& [tick, i, u] : units) {
    if (used <= target) break;
    chosen[i].push_back(u);
    used -= std::min(used, candidates[i]->UnitBytes(u));
  }
  for (auto& [i, list] : chosen) {
    CachedBlob& b = *candidates[i];
    if (!b.evict_mu_.TryLock()) continue;  // being read or written: next round
    absl::StatusOr<uint64_t> freed = b.EvictUnitsLocked(list);
    b.evict_mu_.Unlock();
    if (!freed.ok()) return freed.status();
  }
  return absl::OkStatus();
}

NodeCacheStats NodeCache::Stats() const {
  NodeCacheStats s;
  s.hit_units = hit_units_.load();
  s.miss_units = miss_units_.load();
  s.hit_bytes = hit_bytes_.load();
  s.fetched_bytes = fetched_bytes_.load();
  s.fetch_requests = fetch_requests_.load();
  s.coalesced_waits = coalesced_waits_.load();
  s.evicted_units = evicted_units_.load();
  s.used_bytes = used_bytes_.load();
  return s;
}

}  // namespace dadi::blockstore
