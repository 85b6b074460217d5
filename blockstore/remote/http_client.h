// A small HTTP client over libcurl: one request per call, a pool of easy handles so that
// connections are reused across calls and threads, explicit proxy handling, and a retry loop
// with exponential backoff and jitter. Thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "blockstore/remote/registry_config.h"

namespace dadi::blockstore {

class RandomAccessFile;

struct HttpRequest {
  std::string method = "GET";  // GET, HEAD, PUT, POST, PATCH, DELETE
  std::string url;
  std::vector<std::string> headers;  // "Name: value"; never logged
  // Request body: `body`, or `body_file` bytes [body_offset, body_offset + body_length).
  absl::string_view body;
  const RandomAccessFile* body_file = nullptr;
  uint64_t body_offset = 0;
  uint64_t body_length = 0;
  bool follow_redirects = false;
  // Response bodies larger than this fail with RESOURCE_EXHAUSTED (when no sink is set).
  size_t max_body_bytes = 64 << 20;
  // Expected body size, reserved up front (saves reallocations of large range bodies).
  size_t expected_body_bytes = 0;
  // When set, body bytes of a 2xx response are passed here instead of being collected; return
  // false to abort the transfer. Error bodies are always collected (truncated to 64 KiB).
  std::function<bool(absl::string_view)> body_sink;
  // When set, called with the status and headers of a 2xx response before any body byte is
  // handed to body_sink; an error aborts the transfer and is returned by Send.
  std::function<absl::Status(long status,
                             const std::vector<std::pair<std::string, std::string>>& headers)>
      on_response_headers;
};

struct HttpResponse {
  long status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // lowercase names, final response
  std::string body;
  std::string effective_url;

  std::optional<std::string> Header(absl::string_view name) const;
  std::vector<std::string> HeaderValues(absl::string_view name) const;
};

struct TransportOptions {
  bool verify_tls = true;
  std::string ca_file;  // empty: libcurl's default (the system bundle)
  absl::Duration connect_timeout = absl::Seconds(10);
  absl::Duration request_timeout = absl::Seconds(60);
  absl::Duration stall_timeout = absl::Seconds(20);
  std::string user_agent = "dadi/0.1";
};

struct ProxySettings {
  std::string http_proxy;   // for http:// URLs
  std::string https_proxy;  // for https:// URLs
  std::string no_proxy;     // comma-separated hosts / domains / "*"
  // From http_proxy/HTTP_PROXY, https_proxy/HTTPS_PROXY, all_proxy/ALL_PROXY, no_proxy/NO_PROXY.
  static ProxySettings FromEnvironment();
};

struct HttpStats {
  uint64_t requests = 0;  // attempts sent, retries included
  uint64_t retries = 0;
  uint64_t bytes_received = 0;  // response bodies
  uint64_t bytes_sent = 0;      // request bodies
};

// True for responses worth retrying: 408, 429 and 5xx other than 501/505.
bool IsRetryableHttpStatus(long status);
// True for statuses that are worth retrying (UNAVAILABLE, DEADLINE_EXCEEDED).
bool IsRetryableError(const absl::Status& status);
// The wait before retry number `attempt` (1-based): min(max, initial * 2^(attempt-1)) with
// "equal jitter" (uniform in [d/2, d]), or the server's Retry-After (capped) when longer.
absl::Duration RetryBackoff(const RetryPolicy& policy, int attempt,
                            std::optional<absl::Duration> retry_after);

class HttpClient {
 public:
  explicit HttpClient(ProxySettings proxy = ProxySettings::FromEnvironment());
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // One attempt. Transport failures: UNAVAILABLE (connect, reset, truncated body),
  // DEADLINE_EXCEEDED (timeout or stall), FAILED_PRECONDITION (TLS verification), all naming the
  // URL without its query. Any HTTP status is returned as a response.
  absl::StatusOr<HttpResponse> Send(const HttpRequest& request,
                                    const TransportOptions& transport) const;

  // Send with retries on retryable transport errors and retryable HTTP statuses, honouring
  // Retry-After. Returns the last response (possibly a 5xx) or the last error. A request with a
  // body_sink is retried only when the sink has not received any byte yet.
  absl::StatusOr<HttpResponse> SendWithRetry(const HttpRequest& request,
                                             const TransportOptions& transport,
                                             const RetryPolicy& policy) const;

  HttpStats Stats() const;

 private:
  void* AcquireHandle() const;
  void ReleaseHandle(void* handle) const;

  ProxySettings proxy_;
  mutable absl::Mutex mu_;
  mutable std::vector<void*> idle_ ABSL_GUARDED_BY(mu_);
  mutable std::atomic<uint64_t> requests_{0};
  mutable std::atomic<uint64_t> retries_{0};
  mutable std::atomic<uint64_t> bytes_received_{0};
  mutable std::atomic<uint64_t> bytes_sent_{0};
};

// The URL without query and fragment, for messages (query strings may carry upload state or
// signed storage credentials).
std::string RedactUrl(absl::string_view url);

}  // namespace dadi::blockstore
