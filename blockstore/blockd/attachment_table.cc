#include "blockstore/blockd/attachment_table.h"

#include <algorithm>
#include <future>
#include <memory>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "blockstore/blockd/disk_prefetch.h"
#include "blockstore/blockd/startup_pack.h"
#include "blockstore/blockd/trace_files.h"
#include "spdlog/spdlog.h"

namespace dadi::blockstore::blockd {

// Starts fetching `packs` from `repository` on one thread, in order: one future per pack in
// `fetched->packs`. One at a time: on a slow link, packs fetched side by side share it and each
// arrives later, while the container could already be reading the first (at 100 Mbit/s, 593-604
// against 647-656 ms to python3's first output with two at a time; on loopback 283-307 against
// 272-276).
void AttachmentTable::StartFetchingPacks(ImageOpener* opener, const std::string& repository,
                                         const std::vector<StartupPackRef>& packs,
                                         const std::shared_ptr<std::atomic<bool>>& stop,
                                         FetchedTrace* fetched) {
  if (packs.empty()) return;
  auto promises =
      std::make_shared<std::vector<std::promise<absl::StatusOr<std::string>>>>(packs.size());
  for (auto& p : *promises) fetched->packs.push_back(p.get_future().share());
  fetched->fetcher =
      std::async(std::launch::async, [opener, repository, packs, stop, promises] {
        for (size_t i = 0; i < packs.size(); ++i) {
          (*promises)[i].set_value(*stop ? absl::CancelledError("stopped")
                                         : opener->FetchStartupPack(repository, packs[i]));
        }
      }).share();
}

namespace {

// A startup trace's blocks decompressed ahead: at most this much of the disk (half the default
// block cache).
constexpr uint64_t kMaxWarmBytes = 32 << 20;
// Trace ranges up to this long are read through the device: mostly file system metadata.
constexpr uint64_t kSmallTraceRange = 16 << 10;
// A startup trace's files are read ahead into the page cache up to this much (the device waits
// for it to detach).
constexpr uint64_t kMaxReadAheadBytes = 256 << 20;
// Mapping a trace to files walks the whole file system (its metadata is fetched if need be).
constexpr absl::Duration kMapFilesBudget = absl::Minutes(2);

absl::StatusOr<AttachOptions> ParseOptions(const std::map<std::string, std::string>& options) {
  AttachOptions out;
  for (const auto& [key, value] : options) {
    if (key == "fs_type") {
      if (value == "ext4" || value == "erofs") {
        out.fs_type = value;
      } else if (value.empty() || value == "none") {
        out.fs_type.clear();
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("option fs_type \"", value, "\" is not ext4, erofs or none"));
      }
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown attach option \"", key, "\""));
    }
  }
  return out;
}

// Reads [offset, offset + length) of `file` in chunks, stopping early when `stop` is set.
absl::StatusOr<uint64_t> ReadThrough(const RandomAccessFile& file, uint64_t offset, uint64_t length,
                                     const std::atomic<bool>& stop) {
  constexpr size_t kChunk = 1 << 20;
  std::string buf(kChunk, '\0');
  const uint64_t end = std::min(file.Size(), offset + std::min(length, file.Size()));
  uint64_t done = 0;
  for (uint64_t off = offset; off < end && !stop.load(); off += kChunk) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(kChunk, end - off));
    absl::StatusOr<size_t> got = file.Pread(off, n, buf.data());
    if (!got.ok()) return got.status();
    done += *got;
    if (*got < n) break;
  }
  return done;
}

}  // namespace

bool IsValidDeviceId(absl::string_view id) {
  if (id.empty() || id.size() > 255 || id == "." || id == "..") return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
}

AttachmentTable::AttachmentTable(ImageOpener* opener, DeviceBackend* backend)
    : opener_(opener), backend_(backend) {}

AttachmentTable::~AttachmentTable() {
  if (absl::Status s = DetachAll(); !s.ok()) {
    spdlog::error("detaching everything: {}", s.ToString());
  }
}

absl::StatusOr<AttachmentInfo> AttachmentTable::Attach(const AttachSpec& spec) {
  const std::string id = spec.id.empty() ? ChainIdHex(spec.layers) : spec.id;
  if (!IsValidDeviceId(id)) {
    return absl::InvalidArgumentError(
        absl::StrCat("device id \"", id, "\": 1..255 bytes of [A-Za-z0-9._-], not . or .."));
  }
  absl::StatusOr<AttachOptions> options = ParseOptions(spec.options);
  if (!options.ok()) return options.status();
  if (spec.layers.empty()) return absl::InvalidArgumentError("attach " + id + ": no layers");

  for (;;) {
    std::shared_ptr<Entry> entry;
    {
      absl::MutexLock lock(&mu_);
      std::shared_ptr<Entry>& e = entries_[id];
      if (e == nullptr) e = std::make_shared<Entry>();
      entry = e;
    }
    absl::MutexLock lock(&entry->mu);
    if (entry->gone) continue;  // torn down while we waited: start over with a fresh entry
    if (entry->refcount > 0) {
      if (entry->layers != spec.layers || entry->options != spec.options) {
        return absl::FailedPreconditionError(
            absl::StrCat("device ", id, " is attached with other layers or options"));
      }
      ++entry->refcount;
      absl::MutexLock table_lock(&mu_);
      Snapshot& snap = ready_[id];
      snap.info.refcount = entry->refcount;
      return snap.info;
    }

    // A fresh attachment. Only this id's entry is locked while the layers open.
    auto fail = [&](const absl::Status& s) {
      entry->gone = true;
      absl::MutexLock table_lock(&mu_);
      auto it = entries_.find(id);
      if (it != entries_.end() && it->second == entry) entries_.erase(it);
      return s;
    };
    std::optional<PendingTrace> trace;
    if (spec.startup_trace.has_value()) {
      trace = FetchTrace(spec.layers.back().repository, *spec.startup_trace);
    }
    absl::StatusOr<std::shared_ptr<const OpenImage>> image = opener_->Open(spec.layers);
    if (!image.ok()) {
      return fail(absl::Status(image.status().code(),
                               absl::StrCat("attach ", id, ": ", image.status().message())));
    }
    // The trace's bytes start coming in now, while the device is set up and mounted: the
    // mount's own reads are in the trace and find them in flight or cached.
    if (trace.has_value()) {
      trace->entry = entry;
      StartTracePrefetch(id, *image, *std::move(trace));
    }
    auto disk = std::make_shared<TracedDisk>(*image);
    absl::StatusOr<AttachedDevice> device = backend_->Attach(id, disk, *options);
    if (!device.ok()) {
      return fail(absl::Status(device.status().code(),
                               absl::StrCat("attach ", id, ": ", device.status().message())));
    }
    entry->refcount = 1;
    entry->layers = spec.layers;
    entry->options = spec.options;
    Snapshot snap;
    snap.info.id = id;
    snap.info.device_path = device->device_path;
    snap.info.mount_point = device->mount_point;
    snap.info.virtual_size = device->size;
    snap.info.refcount = 1;
    snap.info.layers = spec.layers;
    snap.image = std::move(*image);
    snap.disk = std::move(disk);
    spdlog::info("attached {} ({} layers, {} bytes) at {} on {}", id, spec.layers.size(),
                 snap.info.virtual_size, snap.info.device_path, snap.info.mount_point);
    absl::MutexLock table_lock(&mu_);
    ready_[id] = snap;
    return snap.info;
  }
}

absl::Status AttachmentTable::TeardownLocked(const std::string& id, Entry& entry) {
  if (absl::Status s = backend_->Detach(id); !s.ok()) return s;
  entry.gone = true;
  entry.refcount = 0;
  Snapshot dropped;
  {
    absl::MutexLock lock(&mu_);
    auto it = entries_.find(id);
    if (it != entries_.end() && it->second.get() == &entry) entries_.erase(it);
    auto r = ready_.find(id);
    if (r != ready_.end()) {
      dropped = std::move(r->second);
      ready_.erase(r);
    }
  }
  spdlog::info("detached {}", id);
  return absl::OkStatus();  // `dropped` closes the image's unshared layers outside mu_
}

absl::StatusOr<uint64_t> AttachmentTable::Detach(absl::string_view id, bool force) {
  std::shared_ptr<Entry> entry;
  {
    absl::MutexLock lock(&mu_);
    auto it = entries_.find(id);
    if (it != entries_.end()) entry = it->second;
  }
  if (entry == nullptr) return absl::NotFoundError(absl::StrCat("device ", id, " is not attached"));
  absl::MutexLock lock(&entry->mu);
  if (entry->gone || entry->refcount == 0) {
    return absl::NotFoundError(absl::StrCat("device ", id, " is not attached"));
  }
  if (!force && entry->refcount > 1) {
    --entry->refcount;
    absl::MutexLock table_lock(&mu_);
    ready_[std::string(id)].info.refcount = entry->refcount;
    return entry->refcount;
  }
  if (absl::Status s = TeardownLocked(std::string(id), *entry); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("detach ", id, ": ", s.message()));
  }
  return 0;
}

std::vector<AttachmentInfo> AttachmentTable::List() const {
  absl::MutexLock lock(&mu_);
  std::vector<AttachmentInfo> out;
  for (const auto& [id, snap] : ready_) out.push_back(snap.info);
  return out;
}

absl::StatusOr<AttachmentStats> AttachmentTable::Stat(absl::string_view id) const {
  Snapshot snap;
  {
    absl::MutexLock lock(&mu_);
    auto it = ready_.find(id);
    if (it == ready_.end()) {
      return absl::NotFoundError(absl::StrCat("device ", id, " is not attached"));
    }
    snap = it->second;
  }
  AttachmentStats stats;
  stats.info = snap.info;
  stats.image = snap.image->Stats();
  return stats;
}

absl::StatusOr<PrefetchResult> AttachmentTable::Prefetch(
    absl::string_view id, const std::vector<PrefetchRange>& ranges,
    const std::vector<std::string>& layer_digests, bool wait) {
  std::shared_ptr<const OpenImage> image;
  {
    absl::MutexLock lock(&mu_);
    auto it = ready_.find(id);
    if (it == ready_.end()) {
      return absl::NotFoundError(absl::StrCat("device ", id, " is not attached"));
    }
    image = it->second.image;
  }
  PrefetchResult result;
  std::vector<std::shared_ptr<const OpenLayer>> layers;
  std::set<std::string> wanted(layer_digests.begin(), layer_digests.end());
  for (const auto& layer : image->layers()) {
    if (wanted.erase(layer->spec().digest) > 0) {
      layers.push_back(layer);
      result.bytes_requested += layer->raw().Size();
    }
  }
  if (!wanted.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("prefetch ", id, ": layer ", *wanted.begin(), " is not in the image"));
  }
  for (const PrefetchRange& r : ranges) {
    if (r.offset >= image->Size() || r.length == 0) {
      return absl::InvalidArgumentError(absl::StrCat("prefetch ", id, ": range [", r.offset, ", +",
                                                     r.length, ") is outside the disk of ",
                                                     image->Size(), " bytes"));
    }
    result.bytes_requested += std::min(r.length, image->Size() - r.offset);
  }

  auto run = [image, layers, ranges, stop = stop_,
              name = std::string(id)]() -> absl::StatusOr<uint64_t> {
    absl::StatusOr<DiskPrefetchResult> ranges_done =
        PrefetchDiskRanges(image->stack(), ranges, *stop);
    if (!ranges_done.ok()) return ranges_done.status();
    uint64_t done = ranges_done->disk_bytes;
    for (const auto& layer : layers) {
      absl::StatusOr<uint64_t> n = ReadThrough(layer->raw(), 0, layer->raw().Size(), *stop);
      if (!n.ok()) return n.status();
      done += *n;
    }
    return done;
  };
  if (wait) {
    absl::StatusOr<uint64_t> done = run();
    if (!done.ok()) {
      return absl::Status(done.status().code(),
                          absl::StrCat("prefetch ", id, ": ", done.status().message()));
    }
    result.bytes_done = *done;
    return result;
  }
  StartJob([run, name = std::string(id)] {
    absl::StatusOr<uint64_t> n = run();
    if (n.ok()) {
      spdlog::debug("prefetch {}: {} bytes", name, *n);
    } else {
      spdlog::warn("prefetch {}: {}", name, n.status().ToString());
    }
  });
  return result;
}

void AttachmentTable::StartJob(std::function<void()> fn) {
  ReapJobs(false);
  Job job;
  job.done = std::make_shared<std::atomic<bool>>(false);
  job.thread = std::thread([fn = std::move(fn), done = job.done] {
    fn();
    done->store(true);
  });
  absl::MutexLock lock(&jobs_mu_);
  jobs_.push_back(std::move(job));
}

AttachmentTable::PendingTrace AttachmentTable::FetchTrace(const std::string& repository,
                                                          const BlobRef& ref) const {
  PendingTrace pending;
  pending.ref = ref;
  pending.start = absl::Now();
  pending.trace =
      std::async(
          std::launch::async,
          [opener = opener_, repository, ref, stop = stop_]() -> absl::StatusOr<FetchedTrace> {
            absl::StatusOr<StartupTrace> trace =
                opener->FetchStartupTrace(repository, ref.digest, ref.size);
            if (!trace.ok()) return trace.status();
            FetchedTrace fetched{*std::move(trace), {}, {}};
            StartFetchingPacks(opener, repository, fetched.trace.packs, stop, &fetched);
            return fetched;
          })
          .share();
  return pending;
}

void AttachmentTable::StartTracePrefetch(const std::string& id,
                                         std::shared_ptr<const OpenImage> image,
                                         PendingTrace trace) {
  StartJob([this, id, image = std::move(image), trace = std::move(trace)] {
    PrefetchStartupTrace(id, *image, trace);
  });
}

void AttachmentTable::PrefetchStartupTrace(const std::string& id, const OpenImage& image,
                                           const PendingTrace& pending) {
  const std::shared_ptr<std::atomic<bool>> stop = stop_;
  const BlobRef& ref = pending.ref;
  absl::StatusOr<FetchedTrace> fetched = pending.trace.get();
  absl::StatusOr<StartupTrace> trace =
      fetched.ok() ? absl::StatusOr<StartupTrace>(fetched->trace) : fetched.status();
  if (trace.ok() && trace->virtual_size != image.Size()) {
    trace = absl::InvalidArgumentError(absl::StrCat(
        "it was recorded on a disk of ", trace->virtual_size, " bytes, not ", image.Size()));
  }
  if (!trace.ok()) {
    spdlog::warn("startup trace {} of {}: {}; starting without it", ref.digest, id,
                 trace.status().ToString());
    return;
  }
  // The packs, when there are some, hold the stored bytes behind the trace, first needed
  // first: into the node cache with each as it arrives, so that the prefetch below finds
  // (nearly) everything present.
  uint64_t from_pack = 0;
  size_t next = 0;  // the first stored range of the next pack
  for (size_t i = 0; i < fetched->packs.size() && !*stop; ++i) {
    const absl::Span<const StoredRange> ranges =
        absl::MakeConstSpan(trace->stored).subspan(next, trace->packs[i].ranges);
    next += trace->packs[i].ranges;
    const absl::StatusOr<std::string>& pack = fetched->packs[i].get();
    absl::Status s = pack.status();
    if (s.ok()) {
      absl::StatusOr<PackFillResult> filled = FillFromPack(image, ranges, *pack, *stop);
      if (filled.ok()) from_pack += filled->pack_bytes;
      s = filled.status();
    }
    if (!s.ok()) {
      spdlog::warn("startup trace {} of {}: pack {}: {}; fetching its ranges instead", ref.digest,
                   id, trace->packs[i].digest, s.ToString());
    }
  }
  const absl::Time packed = absl::Now();
  // The container reads in the order of the trace while it starts: the stored bytes behind
  // the trace are fetched in that order, a few multi-range requests at a time, so that the
  // registry's round trips overlap instead of adding up. Reads of the device wait on a fetch in
  // flight instead of repeating it.
  absl::StatusOr<DiskPrefetchResult> done = PrefetchDiskRanges(image.stack(), trace->ranges, *stop);
  if (!done.ok()) {
    spdlog::warn("startup trace {} of {}: {}", ref.digest, id, done.status().ToString());
    return;
  }
  const absl::Time fetched_at = absl::Now();
  // Then the blocks are decompressed into the block cache: the container's first reads copy
  // them out instead of decompressing them while it waits.
  absl::StatusOr<uint64_t> warmed =
      DecompressDiskRanges(image.stack(), trace->ranges, kMaxWarmBytes, *stop);
  if (!warmed.ok()) {
    spdlog::warn("startup trace {} of {}: decompressing: {}", ref.digest, id,
                 warmed.status().ToString());
  }
  const absl::Time decompressed = absl::Now();
  // And the small ranges through the device, once it is attached (the attach holds the entry's
  // lock; a detach waits for these few reads).
  size_t small = 0;
  FilesReadAhead files;
  absl::Time smalled = absl::Now();
  if (pending.entry != nullptr) {
    absl::ReaderMutexLock lock(&pending.entry->mu);
    std::string device, mount_point;
    if (!pending.entry->gone && pending.entry->refcount > 0) {
      absl::MutexLock table_lock(&mu_);
      auto it = ready_.find(id);
      if (it != ready_.end()) {
        device = it->second.info.device_path;
        mount_point = it->second.info.mount_point;
      }
    }
    if (!device.empty()) {
      absl::StatusOr<size_t> n =
          ReadSmallRangesThroughDevice(device, trace->ranges, kSmallTraceRange, *stop);
      if (n.ok()) {
        small = *n;
      } else {
        spdlog::warn("startup trace {} of {}: {}", ref.digest, id, n.status().ToString());
      }
    }
    smalled = absl::Now();
    // Last, the files' traced bytes into their page cache: the container's reads of them then
    // stop at the page cache.
    if (!mount_point.empty()) {
      files = ReadFilesAhead(mount_point, trace->files, kMaxReadAheadBytes, *stop);
    }
  }
  spdlog::info(
      "startup trace {} of {}: {} ranges, {} bytes of the disk, {} stored bytes ({} from packs "
      "in {:.0f} ms, then {} batches) prefetched in {:.0f} ms, {} bytes decompressed in {:.0f} ms "
      "more, {} small ranges read through the device in {:.0f} ms more, {} bytes of {} files "
      "read ahead in {:.0f} ms more",
      ref.digest, id, trace->ranges.size(), done->disk_bytes, done->stored_bytes, from_pack,
      absl::ToDoubleMilliseconds(packed - pending.start), done->batches,
      absl::ToDoubleMilliseconds(fetched_at - pending.start), warmed.value_or(0),
      absl::ToDoubleMilliseconds(decompressed - fetched_at), small,
      absl::ToDoubleMilliseconds(smalled - decompressed), files.bytes, files.files,
      absl::ToDoubleMilliseconds(absl::Now() - smalled));
}

absl::Status AttachmentTable::Warm(const std::vector<LayerSpec>& layers,
                                   const BlobRef& startup_trace) {
  if (layers.empty()) return absl::InvalidArgumentError("warm: no layers");
  if (startup_trace.digest.empty()) return absl::InvalidArgumentError("warm: no startup trace");
  const std::string name = absl::StrCat("warm-", ChainIdHex(layers));
  StartJob([this, layers, startup_trace, name] {
    PendingTrace trace = FetchTrace(layers.back().repository, startup_trace);
    absl::StatusOr<std::shared_ptr<const OpenImage>> image = opener_->Open(layers);
    if (!image.ok()) {
      spdlog::warn("{}: {}", name, image.status().ToString());
      return;
    }
    PrefetchStartupTrace(name, **image, trace);
  });
  return absl::OkStatus();
}

absl::StatusOr<StartupTrace> AttachmentTable::GetTrace(absl::string_view id) const {
  std::shared_ptr<const TracedDisk> disk;
  std::shared_ptr<const OpenImage> image;
  std::string mount_point;
  {
    absl::MutexLock lock(&mu_);
    auto it = ready_.find(id);
    if (it == ready_.end()) {
      return absl::NotFoundError(absl::StrCat("device ", id, " is not attached"));
    }
    disk = it->second.disk;
    image = it->second.image;
    mount_point = it->second.info.mount_point;
  }
  StartupTrace trace = disk->Trace();
  // Where its bytes are stored: `dadi trace push` packs them.
  trace.stored = LocateStoredRanges(*image, trace.ranges);
  // And which files hold them, read ahead on later attaches. The walk reads the file system
  // through the device: not recorded.
  if (!mount_point.empty()) {
    disk->PauseRecording();
    absl::StatusOr<std::vector<TracedFile>> files =
        MapRangesToFiles(mount_point, trace.ranges, kMapFilesBudget);
    disk->ResumeRecording();
    if (files.ok()) {
      trace.files = *std::move(files);
    } else {
      spdlog::warn("trace of {}: no files: {}", std::string(id), files.status().ToString());
    }
  }
  // What does not fit a trace blob is left out, the files first: both only make a start
  // faster.
  if (SerializeStartupTrace(trace).size() > kMaxStartupTraceBytes) trace.files.clear();
  if (SerializeStartupTrace(trace).size() > kMaxStartupTraceBytes) trace.stored.clear();
  return trace;
}

void AttachmentTable::ReapJobs(bool all) {
  std::vector<Job> finished;
  {
    absl::MutexLock lock(&jobs_mu_);
    for (auto it = jobs_.begin(); it != jobs_.end();) {
      if (all || it->done->load()) {
        finished.push_back(std::move(*it));
        it = jobs_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (Job& job : finished) job.thread.join();
}

absl::Status AttachmentTable::DetachAll() {
  stop_->store(true);
  ReapJobs(true);
  std::vector<std::pair<std::string, std::shared_ptr<Entry>>> entries;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [id, entry] : entries_) entries.emplace_back(id, entry);
  }
  absl::Status first;
  for (auto& [id, entry] : entries) {
    absl::MutexLock lock(&entry->mu);
    if (entry->gone || entry->refcount == 0) continue;
    if (absl::Status s = TeardownLocked(id, *entry); !s.ok()) {
      spdlog::error("detach {}: {}", id, s.ToString());
      if (first.ok()) first = s;
    }
  }
  stop_->store(false);
  return first;
}

}  // namespace dadi::blockstore::blockd
