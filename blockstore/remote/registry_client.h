// An OCI distribution client: manifests, blobs (HEAD, GET, ranged GET), pushes, with Bearer and
// Basic auth, per-host transport settings, mirrors and retries (see docs/registry.md).
// Thread-safe: one RegistryClient is shared by every RemoteBlob of a process.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "blockstore/file/file.h"
#include "blockstore/remote/auth.h"
#include "blockstore/remote/http_client.h"
#include "blockstore/remote/manifest.h"
#include "blockstore/remote/reference.h"
#include "blockstore/remote/registry_config.h"

namespace dadi::blockstore {

struct FetchedManifest {
  std::string media_type;  // one of the four manifest/index types
  std::string digest;      // sha256 of `body` (verified against the reference's digest if any)
  std::string body;
};

// A manifest resolved for one platform (an index is followed to the platform's manifest).
struct ResolvedImage {
  ImageManifest manifest;
  FetchedManifest raw;       // the image manifest itself
  std::string index_digest;  // the index the manifest was selected from, if any
};

struct PushBlobOptions {
  // 0: one monolithic PUT. Otherwise PATCH chunks of this size, then a closing PUT.
  uint64_t chunk_size = 0;
  // Try a cross-repository mount from this repository (same registry) first.
  std::string mount_from;
};

enum class PushOutcome { kUploaded, kAlreadyExists, kMounted };

struct RegistryStats {
  uint64_t token_fetches = 0;
  uint64_t redirects_followed = 0;
  uint64_t redirect_cache_hits = 0;
  uint64_t mirror_fallbacks = 0;
  HttpStats http;
};

class RegistryClient {
 public:
  explicit RegistryClient(RegistryConfig config,
                          std::shared_ptr<HttpClient> http = std::make_shared<HttpClient>());

  const RegistryConfig& config() const { return config_; }

  // Manifest by tag or digest (the reference's ManifestRef()), any of the four types.
  absl::StatusOr<FetchedManifest> GetManifest(const Reference& ref) const;
  // Follows an index to `platform`'s manifest and parses it.
  absl::StatusOr<ResolvedImage> ResolveImage(const Reference& ref,
                                             const Platform& platform = HostPlatform()) const;
  // PUT a manifest under the reference's tag (or digest). Returns its digest.
  absl::StatusOr<std::string> PutManifest(const Reference& ref, absl::string_view media_type,
                                          absl::string_view body) const;

  // Size of a blob; NOT_FOUND when the registry does not have it.
  absl::StatusOr<uint64_t> HeadBlob(const Reference& repo, absl::string_view digest) const;
  // A whole blob into memory (configs and other small blobs), verified against its digest.
  absl::StatusOr<std::string> GetBlob(const Reference& repo, absl::string_view digest,
                                      size_t max_bytes = 64 << 20) const;
  // Streams a blob from `offset` to the end into `sink`; a broken transfer resumes with a
  // Range request where it stopped (within the retry policy).
  absl::Status FetchBlob(const Reference& repo, absl::string_view digest, uint64_t offset,
                         const std::function<absl::Status(absl::string_view)>& sink) const;
  // Exactly `length` bytes at `offset` of the blob into `buf` (a ranged GET). The response's
  // Content-Range and length are checked; a redirect target is cached for later reads.
  absl::Status ReadBlobRange(const Reference& repo, absl::string_view digest, uint64_t offset,
                             size_t length, char* buf) const;
  // Reads `ranges` of the blob (sorted by offset, non-overlapping, each non-empty) into `buf`, one
  // after another (buf holds the sum of their lengths). Several ranges go in one multi-range GET
  // (up to 1024 ranges or 4 KiB of Range header each), answered as 206
  // multipart/byteranges, as one 206 part covering them all, or as 200 with the whole blob.
  // Where the registry (or the storage it redirects to) does not answer one with the ranges
  // asked for (200 with a whole blob too large to take slices of, a part missing, a malformed
  // body), each range is read with its own ranged GET (as ReadBlobRange does), and a storage URL
  // that did so is remembered (while its redirect is cached) to get single-range GETs only.
  // Other errors (401, 403, 404, transport failures after retries) are returned as they are.
  absl::Status ReadBlobRanges(const Reference& repo, absl::string_view digest,
                              const std::vector<ByteRange>& ranges, char* buf) const;

  // Pushes a blob unless the registry has it (HEAD), trying a mount first when asked.
  absl::StatusOr<PushOutcome> PushBlob(const Reference& repo, absl::string_view digest,
                                       const RandomAccessFile& data,
                                       const PushBlobOptions& options = {}) const;

  RegistryStats Stats() const;

 private:
  struct Endpoint {
    std::string base;  // scheme://host[:port]
    std::string host;  // host[:port], the key of its HostConfig and credentials
    bool mirror = false;
  };
  struct AuthState {
    std::string scheme;  // "bearer" or "basic"
    std::string realm;
    std::string service;
  };

  std::vector<Endpoint> PullEndpoints(const std::string& registry) const;
  Endpoint OriginEndpoint(const std::string& registry) const;
  TransportOptions TransportFor(const std::string& host) const;
  RetryPolicy PolicyFor(const Endpoint& ep) const;

  // Sends `req` to `ep` with the Authorization the endpoint needs for `scopes`, answering one
  // 401 by (re)authenticating from its challenge.
  absl::StatusOr<HttpResponse> Send(const Endpoint& ep, const HttpRequest& req,
                                    const std::vector<std::string>& scopes,
                                    const RetryPolicy& policy) const;
  // Runs `op` on each pull endpoint in turn until one succeeds or fails with a definitive
  // answer from the origin.
  absl::Status TryEndpoints(const std::string& registry,
                            const std::function<absl::Status(const Endpoint&)>& op) const;

  absl::StatusOr<std::optional<std::string>> Authorization(const Endpoint& ep,
                                                           const std::vector<std::string>& scopes,
                                                           bool refresh) const;
  absl::StatusOr<std::string> FetchToken(const Endpoint& ep, const AuthState& state,
                                         const std::vector<std::string>& scopes) const;
  absl::Status LearnChallenge(const Endpoint& ep, const HttpResponse& resp) const;

  absl::StatusOr<FetchedManifest> GetManifestFrom(const Endpoint& ep, const Reference& ref) const;
  // One GET of `ranges` (sorted, disjoint, non-empty) from `ep`, through a cached storage
  // redirect if any, following and caching redirects; the ranges land one after another in buf.
  absl::Status ReadRangesFrom(const Endpoint& ep, const Reference& repo, absl::string_view digest,
                              const std::vector<ByteRange>& ranges, char* buf) const;
  // ReadRangesFrom of one range, retrying malformed responses within the endpoint's budget.
  absl::Status ReadRangeRetryingFrom(const Endpoint& ep, const Reference& repo,
                                     absl::string_view digest, uint64_t offset, size_t length,
                                     char* buf) const;
  absl::StatusOr<PushOutcome> PushBlobOnce(const Endpoint& ep, const Reference& repo,
                                           absl::string_view digest, const RandomAccessFile& data,
                                           const PushBlobOptions& options) const;
  std::string ResolveLocation(const Endpoint& ep, absl::string_view location) const;

  RegistryConfig config_;
  std::shared_ptr<HttpClient> http_;
  mutable TokenCache tokens_;
  mutable absl::Mutex mu_;
  mutable std::map<std::string, AuthState> auth_ ABSL_GUARDED_BY(mu_);  // by endpoint base
  struct Redirect {
    std::string url;
    absl::Time expiry;
    bool multi_range = true;  // false: it did not answer a multi-range GET with the ranges
  };
  mutable std::map<std::string, Redirect> redirects_ ABSL_GUARDED_BY(mu_);  // by base+digest
  mutable std::map<std::string, absl::Time> mirror_down_until_ ABSL_GUARDED_BY(mu_);
  mutable std::atomic<uint64_t> token_fetches_{0};
  mutable std::atomic<uint64_t> redirects_followed_{0};
  mutable std::atomic<uint64_t> redirect_cache_hits_{0};
  mutable std::atomic<uint64_t> mirror_fallbacks_{0};
};

// The HTTP status of a registry response as a Status: 401 UNAUTHENTICATED, 403
// PERMISSION_DENIED, 404 NOT_FOUND, 416 OUT_OF_RANGE, 429/5xx UNAVAILABLE, other 4xx
// FAILED_PRECONDITION; the message names `what` and the registry's error codes.
absl::Status RegistryHttpError(const HttpResponse& resp, absl::string_view what);

}  // namespace dadi::blockstore
