#include "blockstore/remote/http_client.h"

#include <curl/curl.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <random>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "blockstore/file/file.h"
#include "blockstore/remote/http_parse.h"
#include "spdlog/spdlog.h"

namespace dadi::blockstore {
namespace {

constexpr size_t kMaxErrorBody = 64 << 10;
constexpr size_t kMaxIdleHandles = 32;

std::string Env(const char* lower, const char* upper) {
  const char* v = std::getenv(lower);
  if (v == nullptr || *v == '\0') v = std::getenv(upper);
  return v == nullptr ? std::string() : std::string(v);
}

void GlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct Transfer {
  const HttpRequest* request = nullptr;
  HttpResponse* response = nullptr;
  absl::Status sink_error;
  bool too_large = false;
  uint64_t sink_bytes = 0;
  uint64_t upload_pos = 0;
  absl::Status upload_error;
};

size_t OnHeader(char* data, size_t size, size_t nitems, void* user) {
  auto* t = static_cast<Transfer*>(user);
  size_t n = size * nitems;
  absl::string_view line(data, n);
  if (absl::StartsWith(line, "HTTP/")) {
    // A new response (after a 100 Continue or a followed redirect): keep only the last one's.
    t->response->headers.clear();
    return n;
  }
  if (auto kv = ParseHeaderLine(line)) {
    if (t->response->headers.size() < 256) t->response->headers.push_back(std::move(*kv));
  }
  return n;
}

size_t OnBody(char* data, size_t size, size_t nmemb, void* user) {
  auto* t = static_cast<Transfer*>(user);
  size_t n = size * nmemb;
  // response->status is set at the end of each header block (see StatusTap in Send): sinks
  // are given only the bodies of 2xx responses.
  if (t->request->body_sink && t->response->status / 100 == 2) {
    if (!t->request->body_sink(absl::string_view(data, n))) {
      t->sink_error = absl::AbortedError("body sink refused data");
      return 0;
    }
    t->sink_bytes += n;
    return n;
  }
  size_t limit = t->request->body_sink ? kMaxErrorBody : t->request->max_body_bytes;
  if (t->response->body.size() + n > limit) {
    if (t->request->body_sink) {  // error body: keep a prefix
      t->response->body.append(data, limit - t->response->body.size());
      return n;
    }
    t->too_large = true;
    return 0;
  }
  t->response->body.append(data, n);
  return n;
}

size_t OnRead(char* buffer, size_t size, size_t nitems, void* user) {
  auto* t = static_cast<Transfer*>(user);
  size_t cap = size * nitems;
  const HttpRequest& r = *t->request;
  uint64_t total = r.body_file != nullptr ? r.body_length : r.body.size();
  if (t->upload_pos >= total) return 0;
  size_t want = static_cast<size_t>(std::min<uint64_t>(cap, total - t->upload_pos));
  if (r.body_file != nullptr) {
    absl::StatusOr<size_t> got = r.body_file->Pread(r.body_offset + t->upload_pos, want, buffer);
    if (!got.ok() || *got == 0) {
      t->upload_error = got.ok() ? absl::DataLossError(absl::StrCat(r.body_file->Name(),
                                                                    ": short read while uploading"))
                                 : got.status();
      return CURL_READFUNC_ABORT;
    }
    want = *got;
  } else {
    std::memcpy(buffer, r.body.data() + t->upload_pos, want);
  }
  t->upload_pos += want;
  return want;
}

absl::Status CurlError(CURLcode code, const char* errbuf, const std::string& method,
                       const std::string& url) {
  std::string msg = absl::StrCat(method, " ", RedactUrl(url), ": ",
                                 errbuf[0] != '\0' ? errbuf : curl_easy_strerror(code));
  switch (code) {
    case CURLE_OPERATION_TIMEDOUT:
      return absl::DeadlineExceededError(msg);
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
      return absl::FailedPreconditionError(msg);
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
      return absl::InvalidArgumentError(msg);
    default:
      return absl::UnavailableError(msg);
  }
}

}  // namespace

std::string RedactUrl(absl::string_view url) {
  size_t q = url.find_first_of("?#");
  return std::string(url.substr(0, q));
}

std::optional<std::string> HttpResponse::Header(absl::string_view name) const {
  std::string lower = absl::AsciiStrToLower(name);
  for (const auto& [k, v] : headers) {
    if (k == lower) return v;
  }
  return std::nullopt;
}

std::vector<std::string> HttpResponse::HeaderValues(absl::string_view name) const {
  std::string lower = absl::AsciiStrToLower(name);
  std::vector<std::string> out;
  for (const auto& [k, v] : headers) {
    if (k == lower) out.push_back(v);
  }
  return out;
}

ProxySettings ProxySettings::FromEnvironment() {
  ProxySettings p;
  std::string all = Env("all_proxy", "ALL_PROXY");
  p.http_proxy = Env("http_proxy", "HTTP_PROXY");
  p.https_proxy = Env("https_proxy", "HTTPS_PROXY");
  if (p.http_proxy.empty()) p.http_proxy = all;
  if (p.https_proxy.empty()) p.https_proxy = all;
  p.no_proxy = Env("no_proxy", "NO_PROXY");
  return p;
}

bool IsRetryableHttpStatus(long status) {
  return status == 408 || status == 429 || (status >= 500 && status != 501 && status != 505);
}

bool IsRetryableError(const absl::Status& status) {
  return status.code() == absl::StatusCode::kUnavailable ||
         status.code() == absl::StatusCode::kDeadlineExceeded;
}

absl::Duration RetryBackoff(const RetryPolicy& policy, int attempt,
                            std::optional<absl::Duration> retry_after) {
  absl::Duration d = policy.initial_backoff;
  for (int i = 1; i < attempt && d < policy.max_backoff; ++i) d *= 2;
  if (d > policy.max_backoff) d = policy.max_backoff;
  thread_local std::mt19937_64 rng(std::random_device{}());
  std::uniform_real_distribution<double> jitter(0.5, 1.0);
  d = d * jitter(rng);
  if (retry_after) {
    absl::Duration ra = std::min(*retry_after, policy.max_retry_after);
    if (ra > d) d = ra;
  }
  return d;
}

HttpClient::HttpClient(ProxySettings proxy) : proxy_(std::move(proxy)) { GlobalInit(); }

HttpClient::~HttpClient() {
  absl::MutexLock lock(&mu_);
  for (void* h : idle_) curl_easy_cleanup(static_cast<CURL*>(h));
  idle_.clear();
}

void* HttpClient::AcquireHandle() const {
  {
    absl::MutexLock lock(&mu_);
    if (!idle_.empty()) {
      void* h = idle_.back();
      idle_.pop_back();
      return h;
    }
  }
  return curl_easy_init();
}

void HttpClient::ReleaseHandle(void* handle) const {
  if (handle == nullptr) return;
  absl::MutexLock lock(&mu_);
  if (idle_.size() < kMaxIdleHandles) {
    idle_.push_back(handle);
  } else {
    curl_easy_cleanup(static_cast<CURL*>(handle));
  }
}

HttpStats HttpClient::Stats() const {
  HttpStats s;
  s.requests = requests_.load();
  s.retries = retries_.load();
  s.bytes_received = bytes_received_.load();
  s.bytes_sent = bytes_sent_.load();
  return s;
}

absl::StatusOr<HttpResponse> HttpClient::Send(const HttpRequest& request,
                                              const TransportOptions& transport) const {
  CURL* curl = static_cast<CURL*>(AcquireHandle());
  if (curl == nullptr) return absl::ResourceExhaustedError("curl_easy_init failed");
  struct Releaser {
    const HttpClient* client;
    CURL* curl;
    ~Releaser() { client->ReleaseHandle(curl); }
  } releaser{this, curl};
  // Reset keeps live connections, the DNS cache and TLS sessions: that is the reuse we want.
  curl_easy_reset(curl);

  HttpResponse response;
  if (request.expected_body_bytes > 0 && !request.body_sink) {
    response.body.reserve(std::min(request.expected_body_bytes, request.max_body_bytes));
  }
  Transfer t;
  t.request = &request;
  t.response = &response;
  char errbuf[CURL_ERROR_SIZE];
  errbuf[0] = '\0';

  curl_easy_setopt(curl, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(curl, CURLOPT_USERAGENT, transport.user_agent.c_str());
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS,
                   static_cast<long>(absl::ToInt64Milliseconds(transport.connect_timeout)));
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS,
                   static_cast<long>(absl::ToInt64Milliseconds(transport.request_timeout)));
  long stall_s = static_cast<long>(absl::ToInt64Seconds(transport.stall_timeout));
  if (stall_s > 0) {
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, stall_s);
  }
  curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, transport.verify_tls ? 1L : 0L);
  curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, transport.verify_tls ? 2L : 0L);
  if (!transport.ca_file.empty()) curl_easy_setopt(curl, CURLOPT_CAINFO, transport.ca_file.c_str());
  // Proxies: set explicitly from the settings captured at construction ("" means direct).
  const std::string& proxy =
      absl::StartsWith(request.url, "https://") ? proxy_.https_proxy : proxy_.http_proxy;
  curl_easy_setopt(curl, CURLOPT_PROXY, proxy.c_str());
  if (!proxy_.no_proxy.empty()) curl_easy_setopt(curl, CURLOPT_NOPROXY, proxy_.no_proxy.c_str());
  curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, request.follow_redirects ? 1L : 0L);
  curl_easy_setopt(curl, CURLOPT_MAXREDIRS, 10L);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, &OnBody);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &t);

  struct curl_slist* headers = nullptr;
  struct SlistFree {
    struct curl_slist** l;
    ~SlistFree() { curl_slist_free_all(*l); }
  } slist_free{&headers};
  for (const std::string& h : request.headers) headers = curl_slist_append(headers, h.c_str());

  uint64_t body_len = request.body_file != nullptr ? request.body_length : request.body.size();
  if (request.method == "HEAD") {
    curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
  } else if (request.method == "GET") {
    curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
  } else {
    // Every other method sends a body (possibly empty) with a Content-Length.
    curl_easy_setopt(curl, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, request.method.c_str());
    curl_easy_setopt(curl, CURLOPT_READFUNCTION, &OnRead);
    curl_easy_setopt(curl, CURLOPT_READDATA, &t);
    curl_easy_setopt(curl, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(body_len));
    headers = curl_slist_append(headers, "Expect:");
  }
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);

  // The body callback needs the status to decide where bytes go; curl has it by the time the
  // first body byte arrives, and the header callback has just run: read it there instead.
  struct StatusTap {
    static size_t OnHeaderWithStatus(char* data, size_t size, size_t nitems, void* user) {
      auto* pair = static_cast<std::pair<Transfer*, CURL*>*>(user);
      size_t n = OnHeader(data, size, nitems, pair->first);
      if (n == 2 && data[0] == '\r') {  // end of a header block
        long code = 0;
        curl_easy_getinfo(pair->second, CURLINFO_RESPONSE_CODE, &code);
        Transfer* t = pair->first;
        t->response->status = code;
        if (code / 100 == 2 && t->request->on_response_headers) {
          absl::Status s = t->request->on_response_headers(code, t->response->headers);
          if (!s.ok()) {
            t->sink_error = std::move(s);
            return 0;  // aborts the transfer
          }
        }
      }
      return n;
    }
  };
  std::pair<Transfer*, CURL*> tap{&t, curl};
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, &StatusTap::OnHeaderWithStatus);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &tap);

  requests_.fetch_add(1, std::memory_order_relaxed);
  CURLcode rc = curl_easy_perform(curl);
  bytes_sent_.fetch_add(t.upload_pos, std::memory_order_relaxed);
  bytes_received_.fetch_add(t.sink_bytes + response.body.size(), std::memory_order_relaxed);
  if (rc != CURLE_OK) {
    if (t.too_large) {
      return absl::ResourceExhaustedError(absl::StrCat(request.method, " ", RedactUrl(request.url),
                                                       ": response body over ",
                                                       request.max_body_bytes, " bytes"));
    }
    if (!t.sink_error.ok()) return t.sink_error;
    if (!t.upload_error.ok()) return t.upload_error;
    return CurlError(rc, errbuf, request.method, request.url);
  }
  long code = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
  response.status = code;
  char* eff = nullptr;
  if (curl_easy_getinfo(curl, CURLINFO_EFFECTIVE_URL, &eff) == CURLE_OK && eff != nullptr) {
    response.effective_url = eff;
  }
  return response;
}

absl::StatusOr<HttpResponse> HttpClient::SendWithRetry(const HttpRequest& request,
                                                       const TransportOptions& transport,
                                                       const RetryPolicy& policy) const {
  int attempts = std::max(1, policy.max_attempts);
  absl::StatusOr<HttpResponse> last = absl::UnknownError("no attempt made");
  uint64_t sink_bytes = 0;
  HttpRequest req = request;
  if (request.body_sink) {
    // Count what the sink took, so a retry after partial delivery can be refused.
    req.body_sink = [&](absl::string_view data) {
      sink_bytes += data.size();
      return request.body_sink(data);
    };
  }
  for (int attempt = 1; attempt <= attempts; ++attempt) {
    last = Send(req, transport);
    std::optional<absl::Duration> retry_after;
    if (last.ok()) {
      if (!IsRetryableHttpStatus(last->status)) return last;
      if (auto ra = last->Header("retry-after")) retry_after = ParseRetryAfter(*ra, absl::Now());
    } else if (!IsRetryableError(last.status())) {
      return last;
    }
    if (sink_bytes > 0 || attempt == attempts) break;
    absl::Duration wait = RetryBackoff(policy, attempt, retry_after);
    spdlog::debug("{} {}: attempt {} failed ({}), retrying in {} ms", request.method,
                  RedactUrl(request.url), attempt,
                  last.ok() ? absl::StrCat("HTTP ", last->status) : last.status().ToString(),
                  absl::ToInt64Milliseconds(wait));
    retries_.fetch_add(1, std::memory_order_relaxed);
    absl::SleepFor(wait);
  }
  return last;
}

}  // namespace dadi::blockstore
