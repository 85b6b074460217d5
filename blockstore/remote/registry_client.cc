#include "blockstore/remote/registry_client.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "blockstore/file/file.h"
#include "blockstore/remote/digest.h"
#include "blockstore/remote/http_parse.h"
#include "spdlog/spdlog.h"

namespace dadi::blockstore {
namespace {

// A redirect target (a short-lived storage URL) is reused for range reads for this long, or
// until it fails.
constexpr absl::Duration kRedirectTtl = absl::Minutes(5);
// A mirror that failed to answer is skipped for this long.
constexpr absl::Duration kMirrorHoldDown = absl::Seconds(30);

std::string PullScope(const Reference& r) {
  return absl::StrCat("repository:", r.repository, ":pull");
}
std::string PushScope(const Reference& r) {
  return absl::StrCat("repository:", r.repository, ":pull,push");
}

absl::Status CheckRepo(const Reference& r) {
  if (r.registry.empty()) return absl::InvalidArgumentError("reference has no registry host");
  if (!IsValidRepository(r.repository)) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid repository \"", r.repository.substr(0, 200), "\""));
  }
  return absl::OkStatus();
}

std::string AuthorityOf(absl::string_view url) {
  absl::StatusOr<UrlParts> p = ParseHttpUrl(url);
  return p.ok() ? p->authority : std::string();
}

bool IsRedirect(long status) {
  return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

// The end (exclusive) of a range.
uint64_t EndOf(const ByteRange& r) { return r.offset + r.length; }

uint64_t TotalLength(const std::vector<ByteRange>& ranges) {
  uint64_t sum = 0;
  for (const ByteRange& r : ranges) sum += r.length;
  return sum;
}

// "Range: bytes=a-b,c-d,..." for `ranges` (sorted, non-empty each).
std::string RangeHeader(const std::vector<ByteRange>& ranges) {
  std::string out = "Range: bytes=";
  for (size_t i = 0; i < ranges.size(); ++i) {
    absl::StrAppend(&out, i == 0 ? "" : ",", ranges[i].offset, "-", EndOf(ranges[i]) - 1);
  }
  return out;
}

// The largest body a GET of `ranges` may bring: the ranges plus multipart overhead, and never
// less than 16 MiB (a registry that ignores Range sends the whole blob: slices of a small one are
// taken, a larger one fails with RESOURCE_EXHAUSTED).
size_t BodyLimit(const std::vector<ByteRange>& ranges) {
  uint64_t want = TotalLength(ranges);
  if (ranges.size() > 1) want += 256 * ranges.size() + 4096;
  return static_cast<size_t>(std::max<uint64_t>(want, 16 << 20));
}

absl::Status Malformed(absl::string_view what, absl::string_view detail) {
  return absl::UnavailableError(absl::StrCat(what, ": malformed response: ", detail));
}

// Copies each of `ranges` (one after another into buf) from the parts of a multipart/byteranges
// body; every range must lie within one part.
absl::Status TakeFromParts(absl::string_view body, absl::string_view boundary,
                           const std::vector<ByteRange>& ranges, char* buf,
                           absl::string_view what) {
  absl::StatusOr<std::vector<BytesPart>> parsed = ParseMultipartByteranges(body, boundary);
  if (!parsed.ok()) return Malformed(what, parsed.status().message());
  std::vector<BytesPart>& parts = *parsed;
  std::sort(parts.begin(), parts.end(),
            [](const BytesPart& a, const BytesPart& b) { return a.first < b.first; });
  for (const ByteRange& r : ranges) {
    const uint64_t last = EndOf(r) - 1;
    // The part that starts last at or before r.offset usually covers it; overlapping parts are
    // searched further back.
    auto it = std::upper_bound(parts.begin(), parts.end(), r.offset,
                               [](uint64_t off, const BytesPart& p) { return off < p.first; });
    const BytesPart* found = nullptr;
    while (it != parts.begin()) {
      --it;
      if (it->last >= last) {
        found = &*it;
        break;
      }
    }
    if (found == nullptr) {
      return Malformed(what, absl::StrCat("no part holds bytes ", r.offset, "-", last));
    }
    std::memcpy(buf, found->data.data() + (r.offset - found->first), r.length);
    buf += r.length;
  }
  return absl::OkStatus();
}

// Checks that a GET of `ranges` (sorted) was answered with them and copies them, one after
// another, into buf: a 206 multipart/byteranges whose parts hold every range, a 206 single part
// whose Content-Range covers every range (its body exactly that long), or a 200 with the whole
// blob (slices of it are taken).
absl::Status TakeRanges(const HttpResponse& resp, const std::vector<ByteRange>& ranges, char* buf,
                        absl::string_view what) {
  const uint64_t first = ranges.front().offset;
  const uint64_t last = EndOf(ranges.back()) - 1;
  if (resp.status == 206) {
    std::optional<std::string> type = resp.Header("content-type");
    if (type && absl::StartsWithIgnoreCase(absl::StripLeadingAsciiWhitespace(*type),
                                           "multipart/byteranges")) {
      absl::StatusOr<std::string> boundary = ParseMultipartBoundary(*type);
      if (!boundary.ok()) return Malformed(what, boundary.status().message());
      return TakeFromParts(resp.body, *boundary, ranges, buf, what);
    }
    std::optional<std::string> cr = resp.Header("content-range");
    if (!cr) return Malformed(what, "206 without Content-Range");
    absl::StatusOr<ContentRange> range = ParseContentRange(*cr);
    if (!range.ok()) return Malformed(what, range.status().message());
    if (range->first > first || range->last < last) {
      return Malformed(what, absl::StrCat("asked for bytes ", first, "-", last, ", got ",
                                          range->first, "-", range->last));
    }
    if (resp.body.empty() || resp.body.size() - 1 != range->last - range->first) {
      return absl::UnavailableError(absl::StrCat(what, ": got ", resp.body.size(),
                                                 " body bytes, expected ",
                                                 range->last - range->first + 1));
    }
    for (const ByteRange& r : ranges) {
      std::memcpy(buf, resp.body.data() + (r.offset - range->first), r.length);
      buf += r.length;
    }
    return absl::OkStatus();
  }
  if (resp.status == 200) {
    // The server ignored Range and sent the whole blob: take our slices of it.
    if (resp.body.size() <= last) {
      return absl::UnavailableError(
          absl::StrCat(what, ": server ignored Range and sent only ", resp.body.size(), " bytes"));
    }
    for (const ByteRange& r : ranges) {
      std::memcpy(buf, resp.body.data() + r.offset, r.length);
      buf += r.length;
    }
    return absl::OkStatus();
  }
  return RegistryHttpError(resp, what);
}

// True when a multi-range GET got an answer that does not hold the ranges (a whole blob too
// large to take, a part missing, a malformed body): worth reading each range on its own.
bool WorthReadingRangesAlone(const absl::Status& s) {
  return absl::IsResourceExhausted(s) || absl::IsUnimplemented(s) ||
         (absl::IsUnavailable(s) && absl::StrContains(s.message(), "malformed response"));
}

// A multi-range GET carries at most this many ranges and this many Range header bytes (some
// servers and proxies limit header lines to 8 KiB).
constexpr size_t kMaxRangesPerRequest = 1024;
constexpr size_t kMaxRangeHeaderBytes = 4096;

}  // namespace

absl::Status RegistryHttpError(const HttpResponse& resp, absl::string_view what) {
  std::string detail = DescribeRegistryErrors(resp.body);
  std::string msg = absl::StrCat(what, ": HTTP ", resp.status);
  if (!detail.empty()) absl::StrAppend(&msg, " (", detail, ")");
  long s = resp.status;
  if (s == 401) return absl::UnauthenticatedError(msg);
  if (s == 403) return absl::PermissionDeniedError(msg);
  if (s == 404) return absl::NotFoundError(msg);
  if (s == 416) return absl::OutOfRangeError(msg);
  if (IsRetryableHttpStatus(s)) return absl::UnavailableError(msg);
  if (s >= 400 && s < 500) return absl::FailedPreconditionError(msg);
  return absl::InternalError(absl::StrCat(msg, " (unexpected status)"));
}

RegistryClient::RegistryClient(RegistryConfig config, std::shared_ptr<HttpClient> http)
    : config_(std::move(config)), http_(std::move(http)) {}

RegistryStats RegistryClient::Stats() const {
  RegistryStats s;
  s.token_fetches = token_fetches_.load();
  s.redirects_followed = redirects_followed_.load();
  s.redirect_cache_hits = redirect_cache_hits_.load();
  s.mirror_fallbacks = mirror_fallbacks_.load();
  s.http = http_->Stats();
  return s;
}

TransportOptions RegistryClient::TransportFor(const std::string& host) const {
  HostConfig hc = config_.Host(host);
  TransportOptions t;
  t.verify_tls = !hc.insecure_skip_verify;
  t.ca_file = hc.ca_file.empty() ? config_.ca_file : hc.ca_file;
  t.connect_timeout = config_.connect_timeout;
  t.request_timeout = config_.request_timeout;
  t.stall_timeout = config_.stall_timeout;
  t.user_agent = config_.user_agent;
  return t;
}

RetryPolicy RegistryClient::PolicyFor(const Endpoint& ep) const {
  RetryPolicy p = config_.retry;
  // A mirror gets one retry: falling back to the origin is better than waiting on a mirror.
  if (ep.mirror) p.max_attempts = std::min(p.max_attempts, 2);
  return p;
}

RegistryClient::Endpoint RegistryClient::OriginEndpoint(const std::string& registry) const {
  HostConfig hc = config_.Host(registry);
  return Endpoint{absl::StrCat(hc.plain_http ? "http://" : "https://", registry), registry, false};
}

std::vector<RegistryClient::Endpoint> RegistryClient::PullEndpoints(
    const std::string& registry) const {
  std::vector<Endpoint> out;
  HostConfig hc = config_.Host(registry);
  absl::Time now = absl::Now();
  for (const std::string& m : hc.mirrors) {
    absl::StatusOr<UrlParts> p = ParseHttpUrl(m);
    if (!p.ok()) {
      spdlog::warn("registry {}: ignoring mirror {}: {}", registry, RedactUrl(m),
                   std::string(p.status().message()));
      continue;
    }
    std::string base = absl::StrCat(p->scheme, "://", p->authority);
    {
      absl::MutexLock lock(&mu_);
      auto it = mirror_down_until_.find(base);
      if (it != mirror_down_until_.end() && it->second > now) continue;
    }
    out.push_back(Endpoint{base, p->authority, true});
  }
  out.push_back(OriginEndpoint(registry));
  return out;
}

absl::Status RegistryClient::TryEndpoints(
    const std::string& registry, const std::function<absl::Status(const Endpoint&)>& op) const {
  absl::Status last;
  for (const Endpoint& ep : PullEndpoints(registry)) {
    last = op(ep);
    if (last.ok() || !ep.mirror) return last;
    if (IsRetryableError(last)) {
      absl::MutexLock lock(&mu_);
      mirror_down_until_[ep.base] = absl::Now() + kMirrorHoldDown;
    }
    mirror_fallbacks_.fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("registry {}: mirror {} failed ({}); trying the next endpoint", registry, ep.base,
                 std::string(last.message()));
  }
  return last;
}

absl::Status RegistryClient::LearnChallenge(const Endpoint& ep, const HttpResponse& resp) const {
  std::vector<std::string> values = resp.HeaderValues("www-authenticate");
  if (values.empty()) {
    return absl::UnauthenticatedError(
        absl::StrCat(ep.base, ": HTTP 401 without a WWW-Authenticate challenge"));
  }
  std::optional<AuthState> bearer, basic;
  for (const std::string& v : values) {
    absl::StatusOr<std::vector<AuthChallenge>> chs = ParseAuthChallenges(v);
    if (!chs.ok()) {
      return absl::UnauthenticatedError(absl::StrCat(ep.base, ": ", chs.status().message()));
    }
    for (const AuthChallenge& ch : *chs) {
      if (ch.scheme == "bearer" && !bearer) {
        std::string realm = ch.Param("realm");
        absl::StatusOr<UrlParts> p = ParseHttpUrl(realm);
        if (!p.ok()) {
          return absl::UnauthenticatedError(absl::StrCat(
              ep.base, ": Bearer challenge realm is not an http(s) URL: ", p.status().message()));
        }
        bearer = AuthState{"bearer", realm, ch.Param("service")};
      } else if (ch.scheme == "basic" && !basic) {
        basic = AuthState{"basic", ch.Param("realm"), ""};
      }
    }
  }
  if (!bearer && !basic) {
    return absl::UnauthenticatedError(
        absl::StrCat(ep.base, ": no supported auth scheme (Bearer, Basic) in the challenge"));
  }
  absl::MutexLock lock(&mu_);
  auth_[ep.base] = bearer ? *bearer : *basic;
  return absl::OkStatus();
}

absl::StatusOr<std::string> RegistryClient::FetchToken(
    const Endpoint& ep, const AuthState& state, const std::vector<std::string>& scopes) const {
  std::string url = state.realm;
  char sep = absl::StrContains(url, '?') ? '&' : '?';
  if (!state.service.empty()) {
    absl::StrAppend(&url, std::string(1, sep), "service=", UrlEncode(state.service));
    sep = '&';
  }
  for (const std::string& s : scopes) {
    absl::StrAppend(&url, std::string(1, sep), "scope=", UrlEncode(s));
    sep = '&';
  }
  HttpRequest req;
  req.url = url;
  req.max_body_bytes = 1 << 20;
  std::optional<Credentials> creds = config_.CredentialsFor(ep.host);
  std::string form;
  if (creds && !creds->identity_token.empty()) {
    // OAuth2 refresh-token grant (docker's "identitytoken"), POSTed to the realm.
    req.url = state.realm;
    req.method = "POST";
    form = absl::StrCat("grant_type=refresh_token&client_id=dadi&refresh_token=",
                        UrlEncode(creds->identity_token), "&service=", UrlEncode(state.service));
    for (const std::string& s : scopes) absl::StrAppend(&form, "&scope=", UrlEncode(s));
    req.body = form;
    req.headers.push_back("Content-Type: application/x-www-form-urlencoded");
  } else if (creds && !creds->username.empty()) {
    req.headers.push_back(absl::StrCat("Authorization: ", BasicAuthorization(*creds)));
  }
  token_fetches_.fetch_add(1, std::memory_order_relaxed);
  absl::StatusOr<HttpResponse> resp =
      http_->SendWithRetry(req, TransportFor(AuthorityOf(state.realm)), config_.retry);
  if (!resp.ok()) return resp.status();
  std::string what = absl::StrCat("token server ", RedactUrl(state.realm), " for ", ep.host);
  if (resp->status == 401 || resp->status == 403) {
    return absl::UnauthenticatedError(absl::StrCat(
        what, ": HTTP ", resp->status,
        creds ? " (credentials rejected)" : " (anonymous access refused; no credentials)"));
  }
  if (resp->status != 200) return RegistryHttpError(*resp, what);
  absl::StatusOr<TokenResponse> tr = ParseTokenResponse(resp->body);
  if (!tr.ok()) return absl::UnauthenticatedError(absl::StrCat(what, ": ", tr.status().message()));
  absl::Duration margin = std::min(tr->expires_in / 10, absl::Seconds(30));
  std::string key =
      absl::StrCat(state.realm, "|", state.service, "|", absl::StrJoin(scopes, " "), "|", ep.host);
  tokens_.Put(key, tr->token, absl::Now() + tr->expires_in - margin);
  return tr->token;
}

absl::StatusOr<std::optional<std::string>> RegistryClient::Authorization(
    const Endpoint& ep, const std::vector<std::string>& scopes, bool refresh) const {
  AuthState state;
  {
    absl::MutexLock lock(&mu_);
    auto it = auth_.find(ep.base);
    if (it == auth_.end()) return std::optional<std::string>();
    state = it->second;
  }
  if (state.scheme == "basic") {
    std::optional<Credentials> creds = config_.CredentialsFor(ep.host);
    if (!creds || creds->username.empty()) return std::optional<std::string>();
    return std::optional<std::string>(BasicAuthorization(*creds));
  }
  std::string key =
      absl::StrCat(state.realm, "|", state.service, "|", absl::StrJoin(scopes, " "), "|", ep.host);
  if (!refresh) {
    if (std::optional<std::string> tok = tokens_.Get(key, absl::Now())) {
      return std::optional<std::string>(absl::StrCat("Bearer ", *tok));
    }
  } else {
    tokens_.Erase(key);
  }
  absl::StatusOr<std::string> tok = FetchToken(ep, state, scopes);
  if (!tok.ok()) return tok.status();
  return std::optional<std::string>(absl::StrCat("Bearer ", *tok));
}

absl::StatusOr<HttpResponse> RegistryClient::Send(const Endpoint& ep, const HttpRequest& req,
                                                  const std::vector<std::string>& scopes,
                                                  const RetryPolicy& policy) const {
  absl::StatusOr<std::optional<std::string>> authz = Authorization(ep, scopes, false);
  if (!authz.ok()) return authz.status();
  std::string authority = AuthorityOf(req.url);
  bool same_host = authority == AuthorityOf(ep.base);
  for (int round = 0;; ++round) {
    HttpRequest r = req;
    if (*authz && same_host) r.headers.push_back(absl::StrCat("Authorization: ", **authz));
    absl::StatusOr<HttpResponse> resp = http_->SendWithRetry(r, TransportFor(authority), policy);
    if (!resp.ok() || resp->status != 401 || round == 1 || !same_host) return resp;
    if (absl::Status s = LearnChallenge(ep, *resp); !s.ok()) return s;
    authz = Authorization(ep, scopes, /*refresh=*/true);
    if (!authz.ok()) return authz.status();
    if (!*authz) {
      return absl::UnauthenticatedError(absl::StrCat(ep.host, " requires credentials (", req.method,
                                                     " ", RedactUrl(req.url),
                                                     ") and none are configured"));
    }
  }
}

std::string RegistryClient::ResolveLocation(const Endpoint& ep, absl::string_view location) const {
  if (absl::StartsWith(location, "http://") || absl::StartsWith(location, "https://")) {
    return std::string(location);
  }
  if (absl::StartsWith(location, "/")) return absl::StrCat(ep.base, location);
  return absl::StrCat(ep.base, "/", location);
}

absl::StatusOr<FetchedManifest> RegistryClient::GetManifestFrom(const Endpoint& ep,
                                                                const Reference& ref) const {
  HttpRequest req;
  req.url = absl::StrCat(ep.base, "/v2/", ref.repository, "/manifests/", ref.ManifestRef());
  req.headers.push_back(absl::StrCat("Accept: ", ManifestAcceptHeader()));
  req.follow_redirects = true;
  req.max_body_bytes = kMaxManifestBytes;
  std::string what = absl::StrCat("manifest ", ref.String(), " from ", ep.base);
  absl::StatusOr<HttpResponse> resp = Send(ep, req, {PullScope(ref)}, PolicyFor(ep));
  if (!resp.ok()) return resp.status();
  if (resp->status != 200) return RegistryHttpError(*resp, what);
  FetchedManifest out;
  out.digest = Sha256Digest(resp->body);
  if (!ref.digest.empty() && absl::StartsWith(ref.digest, "sha256:") && out.digest != ref.digest) {
    return absl::DataLossError(
        absl::StrCat(what, ": content digest is ", out.digest, ", expected ", ref.digest));
  }
  absl::StatusOr<std::string> mt =
      DetectManifestMediaType(resp->body, resp->Header("content-type").value_or(""));
  if (!mt.ok()) return absl::InvalidArgumentError(absl::StrCat(what, ": ", mt.status().message()));
  out.media_type = std::move(*mt);
  out.body = std::move(resp->body);
  return out;
}

absl::StatusOr<FetchedManifest> RegistryClient::GetManifest(const Reference& ref) const {
  if (absl::Status s = CheckRepo(ref); !s.ok()) return s;
  if (ref.ManifestRef().empty())
    return absl::InvalidArgumentError("reference has no tag or digest");
  if (!ref.digest.empty()) {
    if (absl::Status s = CheckDigest(ref.digest, "manifest reference"); !s.ok()) return s;
  } else if (!IsValidTag(ref.tag)) {
    return absl::InvalidArgumentError("invalid tag in reference");
  }
  absl::StatusOr<FetchedManifest> out;
  absl::Status s = TryEndpoints(ref.registry, [&](const Endpoint& ep) {
    out = GetManifestFrom(ep, ref);
    return out.status();
  });
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<ResolvedImage> RegistryClient::ResolveImage(const Reference& ref,
                                                           const Platform& platform) const {
  absl::StatusOr<FetchedManifest> top = GetManifest(ref);
  if (!top.ok()) return top.status();
  ResolvedImage out;
  if (IsIndexMediaType(top->media_type)) {
    absl::StatusOr<ImageIndex> idx = ParseImageIndex(top->body);
    if (!idx.ok()) return idx.status();
    absl::StatusOr<Descriptor> d = SelectPlatform(*idx, platform);
    if (!d.ok()) return absl::NotFoundError(absl::StrCat(ref.String(), ": ", d.status().message()));
    Reference child = ref;
    child.digest = d->digest;
    absl::StatusOr<FetchedManifest> m = GetManifest(child);
    if (!m.ok()) return m.status();
    if (!IsManifestMediaType(m->media_type)) {
      return absl::InvalidArgumentError(
          absl::StrCat(ref.String(), ": index entry ", d->digest, " is not an image manifest"));
    }
    out.index_digest = top->digest;
    out.raw = std::move(*m);
  } else {
    out.raw = std::move(*top);
  }
  absl::StatusOr<ImageManifest> parsed = ParseImageManifest(out.raw.body);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(ref.String(), ": ", parsed.status().message()));
  }
  out.manifest = std::move(*parsed);
  return out;
}

absl::StatusOr<std::string> RegistryClient::PutManifest(const Reference& ref,
                                                        absl::string_view media_type,
                                                        absl::string_view body) const {
  if (absl::Status s = CheckRepo(ref); !s.ok()) return s;
  std::string digest = Sha256Digest(body);
  std::string target = ref.tag.empty() ? ref.digest : ref.tag;
  if (target.empty()) return absl::InvalidArgumentError("manifest push needs a tag or digest");
  if (!ref.tag.empty() && !ref.digest.empty() && ref.digest != digest) {
    return absl::InvalidArgumentError(absl::StrCat(
        "manifest body digest ", digest, " does not match reference digest ", ref.digest));
  }
  Endpoint ep = OriginEndpoint(ref.registry);
  HttpRequest req;
  req.method = "PUT";
  req.url = absl::StrCat(ep.base, "/v2/", ref.repository, "/manifests/", target);
  req.headers.push_back(absl::StrCat("Content-Type: ", media_type));
  req.body = body;
  std::string what = absl::StrCat("PUT manifest ", ref.String());
  absl::StatusOr<HttpResponse> resp = Send(ep, req, {PushScope(ref)}, config_.retry);
  if (!resp.ok()) return resp.status();
  if (resp->status != 201 && resp->status != 200) return RegistryHttpError(*resp, what);
  if (std::optional<std::string> got = resp->Header("docker-content-digest")) {
    if (*got != digest) {
      return absl::DataLossError(
          absl::StrCat(what, ": registry stored digest ", *got, ", we sent ", digest));
    }
  }
  return digest;
}

absl::StatusOr<uint64_t> RegistryClient::HeadBlob(const Reference& repo,
                                                  absl::string_view digest) const {
  if (absl::Status s = CheckRepo(repo); !s.ok()) return s;
  if (absl::Status s = CheckDigest(digest, "blob"); !s.ok()) return s;
  uint64_t size = 0;
  absl::Status s = TryEndpoints(repo.registry, [&](const Endpoint& ep) -> absl::Status {
    HttpRequest req;
    req.method = "HEAD";
    req.url = absl::StrCat(ep.base, "/v2/", repo.repository, "/blobs/", digest);
    req.follow_redirects = true;
    std::string what = absl::StrCat("HEAD blob ", digest, " in ", repo.repository, " at ", ep.base);
    absl::StatusOr<HttpResponse> resp = Send(ep, req, {PullScope(repo)}, PolicyFor(ep));
    if (!resp.ok()) return resp.status();
    if (resp->status != 200) return RegistryHttpError(*resp, what);
    std::optional<std::string> cl = resp->Header("content-length");
    std::optional<uint64_t> n = cl ? ParseDecimal(*cl) : std::nullopt;
    if (!n) return absl::DataLossError(absl::StrCat(what, ": no valid Content-Length"));
    size = *n;
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return size;
}

absl::Status RegistryClient::FetchBlob(
    const Reference& repo, absl::string_view digest, uint64_t offset,
    const std::function<absl::Status(absl::string_view)>& sink) const {
  if (absl::Status s = CheckRepo(repo); !s.ok()) return s;
  if (absl::Status s = CheckDigest(digest, "blob"); !s.ok()) return s;
  return TryEndpoints(repo.registry, [&](const Endpoint& ep) -> absl::Status {
    uint64_t pos = offset;
    std::optional<uint64_t> total;
    RetryPolicy once = PolicyFor(ep);
    int attempts = once.max_attempts;
    once.max_attempts = 1;
    absl::Status last;
    for (int attempt = 1; attempt <= attempts; ++attempt) {
      if (total && pos >= *total) return absl::OkStatus();
      HttpRequest req;
      req.url = absl::StrCat(ep.base, "/v2/", repo.repository, "/blobs/", digest);
      req.follow_redirects = true;
      if (pos > 0) req.headers.push_back(absl::StrCat("Range: bytes=", pos, "-"));
      absl::Status sink_status;
      uint64_t start = pos;
      req.on_response_headers = [&](long status, const auto& headers) -> absl::Status {
        HttpResponse h;
        h.headers = headers;
        if (status == 206) {
          absl::StatusOr<ContentRange> cr =
              ParseContentRange(h.Header("content-range").value_or(""));
          if (!cr.ok()) return absl::DataLossError(cr.status().message());
          if (cr->first != start)
            return absl::DataLossError("Content-Range does not start at our offset");
          if (cr->total) total = *cr->total;
        } else if (status == 200) {
          if (start != 0) return absl::DataLossError("server ignored Range on resume");
          if (auto cl = h.Header("content-length")) {
            if (auto n = ParseDecimal(*cl)) total = *n;
          }
        } else {
          return absl::DataLossError(absl::StrCat("unexpected status ", status));
        }
        return absl::OkStatus();
      };
      req.body_sink = [&](absl::string_view data) {
        sink_status = sink(data);
        if (!sink_status.ok()) return false;
        pos += data.size();
        return true;
      };
      absl::StatusOr<HttpResponse> resp = Send(ep, req, {PullScope(repo)}, once);
      if (!sink_status.ok()) return sink_status;
      if (resp.ok()) {
        if (resp->status == 200 || resp->status == 206) {
          if (!total || pos == *total) return absl::OkStatus();
          last = absl::UnavailableError(
              absl::StrCat("blob ", digest, ": transfer ended at ", pos, " of ", *total));
        } else if (resp->status == 416 && total && pos >= *total) {
          return absl::OkStatus();
        } else {
          last = RegistryHttpError(*resp, absl::StrCat("GET blob ", digest, " from ", ep.base));
          if (!IsRetryableError(last)) return last;
        }
      } else {
        last = resp.status();
        if (!IsRetryableError(last)) return last;
      }
      if (pos > start) attempt = 0;  // progress was made: the budget restarts
      if (attempt == attempts) break;
      absl::SleepFor(RetryBackoff(config_.retry, std::max(attempt, 1), std::nullopt));
    }
    return last;
  });
}

absl::StatusOr<std::string> RegistryClient::GetBlob(const Reference& repo, absl::string_view digest,
                                                    size_t max_bytes) const {
  std::string out;
  absl::Status s = FetchBlob(repo, digest, 0, [&](absl::string_view data) -> absl::Status {
    if (out.size() + data.size() > max_bytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat("blob ", digest, " is larger than ", max_bytes, " bytes"));
    }
    out.append(data.data(), data.size());
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  if (absl::StartsWith(digest, "sha256:") && Sha256Digest(out) != digest) {
    return absl::DataLossError(absl::StrCat("blob ", digest, " from ", repo.registry,
                                            ": content digest is ", Sha256Digest(out)));
  }
  return out;
}

absl::Status RegistryClient::ReadRangesFrom(const Endpoint& ep, const Reference& repo,
                                            absl::string_view digest,
                                            const std::vector<ByteRange>& ranges, char* buf) const {
  const std::string range = RangeHeader(ranges);
  const uint64_t total = TotalLength(ranges);
  std::string what =
      ranges.size() == 1
          ? absl::StrCat("blob ", digest, " bytes ", ranges[0].offset, "+", ranges[0].length,
                         " from ", ep.base)
          : absl::StrCat("blob ", digest, " ", ranges.size(), " ranges of ", total, " bytes in ",
                         ranges.front().offset, "-", EndOf(ranges.back()) - 1, " from ", ep.base);
  RetryPolicy policy = PolicyFor(ep);
  std::string key = absl::StrCat(ep.base, "|", digest);
  std::optional<Redirect> cached;
  {
    absl::MutexLock lock(&mu_);
    auto it = redirects_.find(key);
    if (it != redirects_.end()) {
      if (it->second.expiry > absl::Now()) {
        cached = it->second;
      } else {
        redirects_.erase(it);
      }
    }
  }
  if (cached && ranges.size() > 1 && !cached->multi_range) {
    return absl::UnimplementedError(
        absl::StrCat(what,
                     ": the storage the registry redirects to did not answer a multi-range "
                     "GET with the ranges before"));
  }
  if (cached) {
    HttpRequest req;
    req.url = cached->url;
    req.headers.push_back(range);
    req.max_body_bytes = BodyLimit(ranges);
    req.expected_body_bytes = total;
    absl::StatusOr<HttpResponse> resp =
        http_->SendWithRetry(req, TransportFor(AuthorityOf(cached->url)), policy);
    absl::Status s = resp.status();
    if (resp.ok() && (resp->status == 206 || resp->status == 200)) {
      s = TakeRanges(*resp, ranges, buf, what);
      if (s.ok()) {
        redirect_cache_hits_.fetch_add(1, std::memory_order_relaxed);
        return s;
      }
    }
    // The storage answered, but not with these ranges (it may not do multi-range GETs): the
    // URL is kept for the ranges read one at a time.
    if (ranges.size() > 1 && WorthReadingRangesAlone(s)) {
      absl::MutexLock lock(&mu_);
      auto it = redirects_.find(key);
      if (it != redirects_.end()) it->second.multi_range = false;
      return s;
    }
    // Expired or failing storage URL: forget it and ask the registry again.
    absl::MutexLock lock(&mu_);
    redirects_.erase(key);
  }
  HttpRequest req;
  req.url = absl::StrCat(ep.base, "/v2/", repo.repository, "/blobs/", digest);
  req.headers.push_back(range);
  req.max_body_bytes = BodyLimit(ranges);
  req.expected_body_bytes = total;
  absl::StatusOr<HttpResponse> resp = Send(ep, req, {PullScope(repo)}, policy);
  if (!resp.ok()) return resp.status();
  std::string storage_url;  // the redirect target that answered, if any
  for (int hops = 0; IsRedirect(resp->status); ++hops) {
    std::optional<std::string> loc = resp->Header("location");
    if (!loc || hops == 5) return RegistryHttpError(*resp, absl::StrCat(what, " (bad redirect)"));
    std::string url = ResolveLocation(ep, *loc);
    if (!ParseHttpUrl(url).ok()) {
      return absl::FailedPreconditionError(absl::StrCat(what, ": redirect to a non-http URL"));
    }
    redirects_followed_.fetch_add(1, std::memory_order_relaxed);
    storage_url = url;
    HttpRequest follow;
    follow.url = url;
    follow.headers.push_back(range);
    follow.max_body_bytes = req.max_body_bytes;
    follow.expected_body_bytes = total;
    // The registry's token is not sent to a storage host on another authority.
    if (AuthorityOf(url) == AuthorityOf(ep.base)) {
      resp = Send(ep, follow, {PullScope(repo)}, policy);
    } else {
      resp = http_->SendWithRetry(follow, TransportFor(AuthorityOf(url)), policy);
    }
    // A storage URL that answers a multi-range GET with more than the ranges (S3 sends the
    // whole object) is kept for reading the ranges alone.
    const bool too_large = ranges.size() > 1 && absl::IsResourceExhausted(resp.status());
    if (too_large || (resp.ok() && (resp->status == 206 || resp->status == 200))) {
      absl::MutexLock lock(&mu_);
      redirects_[key] = Redirect{url, absl::Now() + kRedirectTtl, !too_large};
    }
    if (!resp.ok()) return resp.status();
  }
  absl::Status s = TakeRanges(*resp, ranges, buf, what);
  if (ranges.size() > 1 && WorthReadingRangesAlone(s)) {
    absl::MutexLock lock(&mu_);
    auto it = redirects_.find(key);
    if (it != redirects_.end() && !storage_url.empty() && it->second.url == storage_url) {
      it->second.multi_range = false;
    }
  }
  return s;
}

absl::Status RegistryClient::ReadRangeRetryingFrom(const Endpoint& ep, const Reference& repo,
                                                   absl::string_view digest, uint64_t offset,
                                                   size_t length, char* buf) const {
  // Transport errors and 5xx are retried inside; a response that arrived but is malformed
  // (cut headers, wrong range, short body) is retried here, within the same budget.
  const std::vector<ByteRange> ranges = {ByteRange{offset, length}};
  RetryPolicy policy = PolicyFor(ep);
  absl::Status s;
  for (int attempt = 1;; ++attempt) {
    s = ReadRangesFrom(ep, repo, digest, ranges, buf);
    if (s.ok() || attempt >= policy.max_attempts || !absl::IsUnavailable(s) ||
        !absl::StrContains(s.message(), "malformed response")) {
      return s;
    }
    absl::SleepFor(RetryBackoff(policy, attempt, std::nullopt));
  }
}

absl::Status RegistryClient::ReadBlobRange(const Reference& repo, absl::string_view digest,
                                           uint64_t offset, size_t length, char* buf) const {
  if (length == 0) return absl::OkStatus();
  if (absl::Status s = CheckRepo(repo); !s.ok()) return s;
  if (absl::Status s = CheckDigest(digest, "blob"); !s.ok()) return s;
  if (offset + length < offset) {
    return absl::InvalidArgumentError(
        absl::StrCat("blob ", digest, ": range ", offset, "+", length, " overflows"));
  }
  return TryEndpoints(repo.registry, [&](const Endpoint& ep) {
    return ReadRangeRetryingFrom(ep, repo, digest, offset, length, buf);
  });
}

absl::Status RegistryClient::ReadBlobRanges(const Reference& repo, absl::string_view digest,
                                            const std::vector<ByteRange>& ranges, char* buf) const {
  if (ranges.empty()) return absl::OkStatus();
  if (absl::Status s = CheckRepo(repo); !s.ok()) return s;
  if (absl::Status s = CheckDigest(digest, "blob"); !s.ok()) return s;
  for (size_t i = 0; i < ranges.size(); ++i) {
    const ByteRange& r = ranges[i];
    if (r.length == 0 || EndOf(r) < r.offset || (i > 0 && r.offset < EndOf(ranges[i - 1]))) {
      return absl::InvalidArgumentError(absl::StrCat(
          "blob ", digest, ": range ", i, " (", r.offset, "+", r.length,
          ") is empty, overflows or is not after the one before (ranges must be sorted and "
          "disjoint)"));
    }
  }
  // Batches of ranges, each one GET.
  size_t begin = 0;
  while (begin < ranges.size()) {
    size_t end = begin + 1;
    size_t header_bytes = RangeHeader({ranges[begin]}).size();
    while (end < ranges.size() && end - begin < kMaxRangesPerRequest) {
      size_t more = absl::StrCat(",", ranges[end].offset, "-", EndOf(ranges[end]) - 1).size();
      if (header_bytes + more > kMaxRangeHeaderBytes) break;
      header_bytes += more;
      ++end;
    }
    std::vector<ByteRange> batch(ranges.begin() + begin, ranges.begin() + end);
    absl::Status s = TryEndpoints(repo.registry, [&](const Endpoint& ep) -> absl::Status {
      if (batch.size() > 1) {
        absl::Status multi = ReadRangesFrom(ep, repo, digest, batch, buf);
        // An endpoint that answers without the ranges is not down: it gets each range alone.
        if (!WorthReadingRangesAlone(multi)) return multi;
        spdlog::debug("blob {}: {}; reading {} ranges one at a time", std::string(digest),
                      std::string(multi.message()), batch.size());
      }
      char* out = buf;
      for (const ByteRange& r : batch) {
        absl::Status one = ReadRangeRetryingFrom(ep, repo, digest, r.offset, r.length, out);
        if (!one.ok()) return one;
        out += r.length;
      }
      return absl::OkStatus();
    });
    if (!s.ok()) return s;
    buf += TotalLength(batch);
    begin = end;
  }
  return absl::OkStatus();
}

absl::StatusOr<PushOutcome> RegistryClient::PushBlobOnce(const Endpoint& ep, const Reference& repo,
                                                         absl::string_view digest,
                                                         const RandomAccessFile& data,
                                                         const PushBlobOptions& options) const {
  std::vector<std::string> scopes = {PushScope(repo)};
  if (!options.mount_from.empty()) {
    scopes.push_back(absl::StrCat("repository:", options.mount_from, ":pull"));
  }
  RetryPolicy once = config_.retry;
  once.max_attempts = 1;
  std::string blob_url = absl::StrCat(ep.base, "/v2/", repo.repository, "/blobs/", digest);
  std::string what = absl::StrCat("push blob ", digest, " to ", repo.String());

  HttpRequest head;
  head.method = "HEAD";
  head.url = blob_url;
  absl::StatusOr<HttpResponse> resp = Send(ep, head, scopes, config_.retry);
  if (!resp.ok()) return resp.status();
  if (resp->status == 200) return PushOutcome::kAlreadyExists;
  if (resp->status != 404) return RegistryHttpError(*resp, absl::StrCat(what, " (HEAD)"));

  HttpRequest post;
  post.method = "POST";
  post.url = absl::StrCat(ep.base, "/v2/", repo.repository, "/blobs/uploads/");
  if (!options.mount_from.empty()) {
    absl::StrAppend(&post.url, "?mount=", UrlEncode(digest),
                    "&from=", UrlEncode(options.mount_from));
  }
  resp = Send(ep, post, scopes, once);
  if (!resp.ok()) return resp.status();
  if (resp->status == 201 && !options.mount_from.empty()) return PushOutcome::kMounted;
  if (resp->status != 202) return RegistryHttpError(*resp, absl::StrCat(what, " (POST)"));
  std::optional<std::string> loc = resp->Header("location");
  if (!loc) return absl::InternalError(absl::StrCat(what, ": upload started without a Location"));
  std::string location = ResolveLocation(ep, *loc);

  uint64_t size = data.Size();
  if (options.chunk_size > 0 && size > options.chunk_size) {
    for (uint64_t off = 0; off < size; off += options.chunk_size) {
      uint64_t n = std::min(options.chunk_size, size - off);
      HttpRequest patch;
      patch.method = "PATCH";
      patch.url = location;
      patch.headers.push_back("Content-Type: application/octet-stream");
      patch.headers.push_back(absl::StrCat("Content-Range: ", off, "-", off + n - 1));
      patch.body_file = &data;
      patch.body_offset = off;
      patch.body_length = n;
      resp = Send(ep, patch, scopes, once);
      if (!resp.ok()) return resp.status();
      if (resp->status != 202) {
        return RegistryHttpError(*resp, absl::StrCat(what, " (PATCH at ", off, ")"));
      }
      if (std::optional<std::string> next = resp->Header("location")) {
        location = ResolveLocation(ep, *next);
      }
    }
    HttpRequest put;
    put.method = "PUT";
    put.url = absl::StrCat(location, absl::StrContains(location, '?') ? "&" : "?",
                           "digest=", UrlEncode(digest));
    resp = Send(ep, put, scopes, once);
  } else {
    HttpRequest put;
    put.method = "PUT";
    put.url = absl::StrCat(location, absl::StrContains(location, '?') ? "&" : "?",
                           "digest=", UrlEncode(digest));
    put.headers.push_back("Content-Type: application/octet-stream");
    put.body_file = &data;
    put.body_offset = 0;
    put.body_length = size;
    resp = Send(ep, put, scopes, once);
  }
  if (!resp.ok()) return resp.status();
  if (resp->status != 201) return RegistryHttpError(*resp, absl::StrCat(what, " (PUT)"));
  return PushOutcome::kUploaded;
}

absl::StatusOr<PushOutcome> RegistryClient::PushBlob(const Reference& repo,
                                                     absl::string_view digest,
                                                     const RandomAccessFile& data,
                                                     const PushBlobOptions& options) const {
  if (absl::Status s = CheckRepo(repo); !s.ok()) return s;
  if (absl::Status s = CheckDigest(digest, "blob"); !s.ok()) return s;
  if (!options.mount_from.empty() && !IsValidRepository(options.mount_from)) {
    return absl::InvalidArgumentError("push: invalid mount_from repository");
  }
  Endpoint ep = OriginEndpoint(repo.registry);
  absl::StatusOr<PushOutcome> out;
  for (int attempt = 1;; ++attempt) {
    out = PushBlobOnce(ep, repo, digest, data, options);
    if (out.ok() || !IsRetryableError(out.status()) || attempt >= config_.retry.max_attempts) {
      return out;
    }
    spdlog::warn("push blob {} to {}: {}; restarting the upload", std::string(digest),
                 repo.String(), std::string(out.status().message()));
    absl::SleepFor(RetryBackoff(config_.retry, attempt, std::nullopt));
  }
}

}  // namespace dadi::blockstore
