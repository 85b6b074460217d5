#include "blockstore/remote/remote_blob.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "blockstore/remote/digest.h"
#include "spdlog/spdlog.h"

namespace dadi::blockstore {

namespace {

// Fetches [offset, offset+len) with range GETs, split into parallel parts when large. Holds its
// own references: background readahead may run it after the RemoteBlob is gone.
absl::Status FetchRange(const std::shared_ptr<const RegistryClient>& client, const Reference& repo,
                        const std::string& digest, const RemoteBlobOptions& options,
                        uint64_t offset, size_t len, char* buf) {
  const uint64_t part = std::max<uint64_t>(options.parallel_part, 1 << 20);
  if (options.max_parallel <= 1 || len < 2 * part) {
    return client->ReadBlobRange(repo, digest, offset, len, buf);
  }
  uint64_t parts = std::min<uint64_t>(options.max_parallel, (len + part - 1) / part);
  uint64_t each = (len + parts - 1) / parts;
  std::vector<absl::Status> results(parts);
  std::vector<std::thread> threads;
  for (uint64_t i = 1; i < parts; ++i) {
    uint64_t off = i * each;
    if (off >= len) break;
    size_t n = static_cast<size_t>(std::min<uint64_t>(each, len - off));
    threads.emplace_back([&, i, off, n] {
      results[i] = client->ReadBlobRange(repo, digest, offset + off, n, buf + off);
    });
  }
  results[0] = client->ReadBlobRange(repo, digest, offset,
                                     static_cast<size_t>(std::min<uint64_t>(each, len)), buf);
  for (std::thread& t : threads) t.join();
  for (const absl::Status& s : results) {
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<RemoteBlob>> RemoteBlob::Open(
    std::shared_ptr<const RegistryClient> client, Reference repo, std::string digest, uint64_t size,
    std::shared_ptr<NodeCache> cache, RemoteBlobOptions options) {
  if (client == nullptr || cache == nullptr) {
    return absl::InvalidArgumentError("RemoteBlob: client and cache are required");
  }
  if (absl::Status s = CheckDigest(digest, "RemoteBlob"); !s.ok()) return s;
  if (!IsValidRepository(repo.repository)) {
    return absl::InvalidArgumentError("RemoteBlob: invalid repository");
  }
  absl::StatusOr<std::shared_ptr<CachedBlob>> blob = cache->Blob(digest, size);
  if (!blob.ok()) return blob.status();
  return std::unique_ptr<RemoteBlob>(new RemoteBlob(std::move(client), std::move(repo),
                                                    std::move(*blob), std::move(cache), options));
}

RemoteBlob::RemoteBlob(std::shared_ptr<const RegistryClient> client, Reference repo,
                       std::shared_ptr<CachedBlob> blob, std::shared_ptr<NodeCache> cache,
                       RemoteBlobOptions options)
    : client_(std::move(client)),
      repo_(std::move(repo)),
      blob_(std::move(blob)),
      cache_(std::move(cache)),
      options_(options) {
  fetcher_ = [client = client_, repo = repo_, digest = blob_->digest(), options = options_,
              counters = counters_](uint64_t offset, size_t len, char* buf) {
    counters->fetch_requests.fetch_add(1, std::memory_order_relaxed);
    absl::Status s = FetchRange(client, repo, digest, options, offset, len, buf);
    if (s.ok()) counters->fetched_bytes.fetch_add(len, std::memory_order_relaxed);
    return s;
  };
  ranges_fetcher_ = [client = client_, repo = repo_, digest = blob_->digest(),
                     counters = counters_](const std::vector<ByteRange>& ranges, char* buf) {
    counters->fetch_requests.fetch_add(1, std::memory_order_relaxed);
    absl::Status s = client->ReadBlobRanges(repo, digest, ranges, buf);
    if (s.ok()) {
      uint64_t bytes = 0;
      for (const ByteRange& r : ranges) bytes += r.length;
      counters->fetched_bytes.fetch_add(bytes, std::memory_order_relaxed);
    }
    return s;
  };
}

RemoteBlob::~RemoteBlob() {
  stop_ = true;
  if (download_.joinable()) download_.join();
}

RemoteBlobStats RemoteBlob::Stats() const {
  RemoteBlobStats stats;
  stats.fetched_bytes = counters_->fetched_bytes.load(std::memory_order_relaxed);
  stats.fetch_requests = counters_->fetch_requests.load(std::memory_order_relaxed);
  return stats;
}

std::string RemoteBlob::Name() const {
  return absl::StrCat(repo_.registry, "/", repo_.repository, "@", blob_->digest());
}

absl::StatusOr<size_t> RemoteBlob::Pread(uint64_t offset, size_t n, char* buf) const {
  absl::StatusOr<size_t> got = blob_->Read(offset, n, buf, fetcher_, options_.max_readahead);
  if (!got.ok()) {
    return absl::Status(got.status().code(),
                        absl::StrCat(Name(), ": read at ", offset, ": ", got.status().message()));
  }
  return got;
}

absl::Status RemoteBlob::Prefetch(const std::vector<ByteRange>& ranges) const {
  if (blob_->verified()) return absl::OkStatus();
  absl::Status s = blob_->Prefetch(ranges, ranges_fetcher_, options_.max_ranges_per_request);
  if (!s.ok()) return absl::Status(s.code(), absl::StrCat(Name(), ": prefetch: ", s.message()));
  return s;
}

absl::Status RemoteBlob::PrefetchFrom(const std::vector<ByteRange>& ranges,
                                      const BytesSource& source) const {
  if (blob_->verified()) return absl::OkStatus();
  const uint64_t unit = blob_->unit_size();
  // Runs of units come in; each unit the source has is copied, the others are fetched.
  RangesFetcher fetch = [&](const std::vector<ByteRange>& runs, char* buf) {
    std::vector<ByteRange> missing;
    std::vector<char*> dest;
    char* out = buf;
    for (const ByteRange& run : runs) {
      if (!source(run.offset, run.length, out)) {
        for (uint64_t at = 0; at < run.length; at += unit) {
          const size_t n = static_cast<size_t>(std::min(unit, run.length - at));
          if (source(run.offset + at, n, out + at)) continue;
          if (!missing.empty() &&
              missing.back().offset + missing.back().length == run.offset + at &&
              dest.back() + missing.back().length == out + at) {
            missing.back().length += n;
          } else {
            missing.push_back(ByteRange{run.offset + at, n});
            dest.push_back(out + at);
          }
        }
      }
      out += run.length;
    }
    if (missing.empty()) return absl::OkStatus();
    uint64_t total = 0;
    for (const ByteRange& r : missing) total += r.length;
    std::string fetched(total, '\0');
    if (absl::Status s = ranges_fetcher_(missing, fetched.data()); !s.ok()) return s;
    const char* in = fetched.data();
    for (size_t i = 0; i < missing.size(); ++i) {
      std::memcpy(dest[i], in, missing[i].length);
      in += missing[i].length;
    }
    return absl::OkStatus();
  };
  absl::Status s = blob_->Prefetch(ranges, fetch, options_.max_ranges_per_request);
  if (!s.ok()) return absl::Status(s.code(), absl::StrCat(Name(), ": prefetch: ", s.message()));
  return s;
}

absl::Status RemoteBlob::Invalidate(uint64_t offset, uint64_t len) const {
  return blob_->Invalidate(offset, len);
}

absl::Status RemoteBlob::StartBackgroundDownload(BackgroundDownloadOptions options) {
  if (download_.joinable()) return absl::AlreadyExistsError(Name() + ": download already started");
  if (options.chunk_bytes < blob_->unit_size()) options.chunk_bytes = blob_->unit_size();
  download_ = std::thread([this, options] { download_status_ = RunDownload(options); });
  return absl::OkStatus();
}

absl::Status RemoteBlob::WaitBackgroundDownload() {
  if (download_.joinable()) download_.join();
  return download_status_;
}

absl::Status RemoteBlob::RunDownload(BackgroundDownloadOptions options) {
  if (blob_->verified()) return absl::OkStatus();
  const uint64_t units_per_chunk = options.chunk_bytes / blob_->unit_size();
  const absl::Time start = absl::Now();
  uint64_t fetched = 0;
  for (int round = 0; round < 3 && !blob_->Complete(); ++round) {
    for (uint64_t u = 0; u < blob_->num_units(); u += units_per_chunk) {
      if (stop_) return absl::CancelledError(Name() + ": background download stopped");
      uint64_t before = blob_->PresentUnits();
      if (absl::Status s = blob_->EnsureUnits(u, u + units_per_chunk - 1, fetcher_); !s.ok()) {
        spdlog::warn("{}: background download: {}", Name(), std::string(s.message()));
        return s;
      }
      fetched +=
          (blob_->PresentUnits() - std::min(before, blob_->PresentUnits())) * blob_->unit_size();
      if (options.rate_limit_bytes_per_sec > 0) {
        // Sleep until the average rate since the start is back under the limit.
        absl::Duration due = absl::Seconds(static_cast<double>(fetched) /
                                           static_cast<double>(options.rate_limit_bytes_per_sec));
        absl::Duration elapsed = absl::Now() - start;
        while (due > elapsed && !stop_) {
          absl::SleepFor(std::min(due - elapsed, absl::Milliseconds(100)));
          elapsed = absl::Now() - start;
        }
      }
    }
  }
  if (!blob_->Complete()) {
    return absl::UnavailableError(Name() + ": background download could not complete");
  }
  absl::Status s = blob_->VerifyAndMark();
  if (s.code() == absl::StatusCode::kDataLoss) {
    spdlog::error("{}: DIGEST MISMATCH after full download ({}); discarding the cached copy",
                  Name(), std::string(s.message()));
    if (absl::Status d = blob_->Discard(); !d.ok()) {
      spdlog::error("{}: discarding: {}", Name(), std::string(d.message()));
    }
  }
  return s;
}

}  // namespace dadi::blockstore
