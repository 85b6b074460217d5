// RemoteBlob: a RandomAccessFile over a registry blob. Reads are served from the node cache;
// misses are fetched with range GETs of whole refill units (concurrent misses of one unit share
// one request) and sequential reads are read ahead. Optionally the whole blob is downloaded in
// the background, verified against its digest, and reads then stay local.
//
// Thread-safe: one RemoteBlob may be read from many threads (the FUSE sidecar does).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "blockstore/file/file.h"
#include "blockstore/remote/node_cache.h"
#include "blockstore/remote/reference.h"
#include "blockstore/remote/registry_client.h"

namespace dadi::blockstore {

struct RemoteBlobOptions {
  // Largest readahead window for sequential reads (bytes, a multiple of the cache unit).
  uint64_t max_readahead = 16 << 20;
  // A fetch of at least 2 × `parallel_part` bytes is split into parts fetched concurrently
  // (up to `max_parallel` range GETs): registries serve ranges faster in parallel.
  uint64_t parallel_part = 4 << 20;
  int max_parallel = 4;
  // A prefetch asks for up to this many runs of missing units in one multi-range GET: a
  // registry serves one request with many ranges far faster than as many requests.
  size_t max_ranges_per_request = 16;
};

struct BackgroundDownloadOptions {
  uint64_t rate_limit_bytes_per_sec = 0;  // 0: unlimited
  uint64_t chunk_bytes = 8 << 20;         // bytes per range request
};

// Registry traffic of one RemoteBlob (its reads, readahead and background download).
struct RemoteBlobStats {
  uint64_t fetched_bytes = 0;   // bytes of range GETs that succeeded
  uint64_t fetch_requests = 0;  // unit fetches started (a failed one counts too)
};

class RemoteBlob final : public RandomAccessFile {
 public:
  // `repo` names the registry and repository (tag/digest ignored); `digest` and `size` come from
  // the layer descriptor. No request is made here.
  static absl::StatusOr<std::unique_ptr<RemoteBlob>> Open(
      std::shared_ptr<const RegistryClient> client, Reference repo, std::string digest,
      uint64_t size, std::shared_ptr<NodeCache> cache, RemoteBlobOptions options = {});
  ~RemoteBlob() override;

  uint64_t Size() const override { return blob_->size(); }
  absl::StatusOr<size_t> Pread(uint64_t offset, size_t n, char* buf) const override;
  std::string Name() const override;
  // Fetches the units of `ranges` the node cache lacks (and no reader is fetching), in
  // multi-range GETs of up to max_ranges_per_request runs each, one after another.
  absl::Status Prefetch(const std::vector<ByteRange>& ranges) const override;
  // Copies [offset, offset + n) of this blob into `buf` and returns true when it holds all of
  // those bytes; false otherwise.
  using BytesSource = std::function<bool(uint64_t offset, size_t n, char* buf)>;
  // Like Prefetch, but the missing units' bytes come from `source` where it has them whole (a
  // startup pack, already checked against its digest) and from the registry otherwise.
  absl::Status PrefetchFrom(const std::vector<ByteRange>& ranges, const BytesSource& source) const;

  // Drops the cached units overlapping [offset, offset+len): the next read of them goes to the
  // registry again (RandomAccessFile::Invalidate). The ZFile reader calls this when a block's
  // CRC fails, rereads once, and fails with EIO/DATA_LOSS if the CRC fails again — so wrong
  // bytes are never returned.
  absl::Status Invalidate(uint64_t offset, uint64_t len) const override;

  // Starts downloading every missing unit in a background thread (at most one per RemoteBlob).
  // When all are present the sha256 is verified: on a match reads stay local for good; on a
  // mismatch the cached copy is discarded and an error is logged.
  absl::Status StartBackgroundDownload(BackgroundDownloadOptions options = {});
  // Waits for the background download and returns its outcome (OK if none was started).
  absl::Status WaitBackgroundDownload();
  // True once the whole blob is local and verified.
  bool IsLocal() const { return blob_->verified(); }

  const std::shared_ptr<CachedBlob>& cached() const { return blob_; }
  RemoteBlobStats Stats() const;

 private:
  RemoteBlob(std::shared_ptr<const RegistryClient> client, Reference repo,
             std::shared_ptr<CachedBlob> blob, std::shared_ptr<NodeCache> cache,
             RemoteBlobOptions options);
  absl::Status RunDownload(BackgroundDownloadOptions options);

  std::shared_ptr<const RegistryClient> client_;
  Reference repo_;
  std::shared_ptr<CachedBlob> blob_;
  std::shared_ptr<NodeCache> cache_;
  RemoteBlobOptions options_;
  struct Counters {
    std::atomic<uint64_t> fetched_bytes{0};
    std::atomic<uint64_t> fetch_requests{0};
  };
  // Shared with the fetcher, which background readahead may run after the RemoteBlob is gone.
  std::shared_ptr<Counters> counters_ = std::make_shared<Counters>();
  UnitFetcher fetcher_;
  RangesFetcher ranges_fetcher_;
  std::thread download_;
  std::atomic<bool> stop_{false};
  absl::Status download_status_;
};

}  // namespace dadi::blockstore
