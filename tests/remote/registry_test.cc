// The registry client and RemoteBlob against a real docker-registry on loopback: pushes and
// pulls, range reads, Basic and token auth, TLS, mirrors, redirects, and a fault-injecting proxy.
// Timeouts and backoffs are configured short; nothing asserts on timing.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <atomic>
#include <fstream>
#include <random>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "blockstore/file/file.h"
#include "blockstore/remote/digest.h"
#include "blockstore/remote/http_parse.h"
#include "blockstore/remote/registry_client.h"
#include "blockstore/remote/remote_blob.h"
#include "tests/remote/test_servers.h"
#include "tests/support/scratch_dir.h"

namespace dadi::blockstore {
namespace {

using dadi::testing::Fault;
using dadi::testing::FaultProxy;
using dadi::testing::HttpServer;
using dadi::testing::HttpServerRequest;
using dadi::testing::HttpServerResponse;
using dadi::testing::ScratchDir;
using dadi::testing::TestRegistry;
using dadi::testing::TestRegistryOptions;
using dadi::testing::TokenServer;

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

RegistryConfig FastConfig() {
  RegistryConfig c;
  c.connect_timeout = absl::Seconds(2);
  c.request_timeout = absl::Seconds(5);
  c.stall_timeout = absl::Seconds(1);
  c.retry.max_attempts = 4;
  c.retry.initial_backoff = absl::Milliseconds(20);
  c.retry.max_backoff = absl::Milliseconds(200);
  c.retry.max_retry_after = absl::Seconds(1);
  return c;
}

std::shared_ptr<RegistryClient> NewClient(RegistryConfig config) {
  // No proxy from the environment: everything here is loopback.
  return std::make_shared<RegistryClient>(std::move(config),
                                          std::make_shared<HttpClient>(ProxySettings{}));
}

RegistryConfig PlainConfig(const std::string& host) {
  RegistryConfig c = FastConfig();
  c.hosts[host].plain_http = true;
  return c;
}

Reference Repo(const std::string& host, const std::string& repo, const std::string& tag = "") {
  Reference r;
  r.registry = host;
  r.repository = repo;
  r.tag = tag;
  return r;
}

absl::StatusOr<PushOutcome> Push(const RegistryClient& c, const Reference& repo,
                                 const std::string& data, PushBlobOptions o = {}) {
  auto file = NewMemoryFile(data);
  return c.PushBlob(repo, Sha256Digest(data), *file, o);
}

// Pushes a one-layer image under repo:tag; returns the manifest digest.
std::string PushImage(const RegistryClient& c, const Reference& ref, const std::string& layer) {
  std::string config = R"({"architecture":"amd64","os":"linux","rootfs":{"type":"layers"}})";
  EXPECT_TRUE(Push(c, ref, config).ok());
  EXPECT_TRUE(Push(c, ref, layer).ok());
  ImageManifest m;
  m.media_type = std::string(kOciManifestMediaType);
  m.config = {std::string(kOciConfigMediaType),
              Sha256Digest(config),
              static_cast<int64_t>(config.size()),
              {},
              {},
              std::nullopt,
              ""};
  m.layers.push_back({std::string(kOciLayerMediaType),
                      Sha256Digest(layer),
                      static_cast<int64_t>(layer.size()),
                      {},
                      {},
                      std::nullopt,
                      ""});
  absl::StatusOr<std::string> d =
      c.PutManifest(ref, kOciManifestMediaType, SerializeImageManifest(m));
  EXPECT_TRUE(d.ok()) << d.status();
  return d.ok() ? *d : "";
}

std::shared_ptr<NodeCache> Cache(const std::string& root, uint64_t unit = 1 << 20) {
  NodeCacheOptions o;
  o.root = root;
  o.unit_size = unit;
  return *NodeCache::Open(o);
}

class RegistryTest : public ::testing::Test {
 protected:
  void StartRegistry(TestRegistryOptions options = {}) {
    absl::StatusOr<std::unique_ptr<TestRegistry>> r =
        TestRegistry::Start(dir_.Join("registry"), options);
    ASSERT_TRUE(r.ok()) << r.status();
    registry_ = std::move(*r);
  }
  void SetUp() override { ASSERT_EQ(::mkdir(dir_.Join("registry").c_str(), 0700), 0); }
  ScratchDir dir_{"remote-registry"};
  std::unique_ptr<TestRegistry> registry_;
};

TEST_F(RegistryTest, PushAndPullManifestsAndBlobs) {
  StartRegistry();
  auto client = NewClient(PlainConfig(registry_->host()));
  Reference ref = Repo(registry_->host(), "dadi/app", "v1");
  std::string big = RandomBytes(3 * 1024 * 1024 + 77, 1);
  std::string small = RandomBytes(1000, 2);

  EXPECT_EQ(*Push(*client, ref, small), PushOutcome::kUploaded);
  EXPECT_EQ(*Push(*client, ref, small), PushOutcome::kAlreadyExists);
  PushBlobOptions chunked;
  chunked.chunk_size = 1 << 20;
  EXPECT_EQ(*Push(*client, ref, big, chunked), PushOutcome::kUploaded);
  EXPECT_EQ(*client->HeadBlob(ref, Sha256Digest(big)), big.size());
  EXPECT_EQ(client->HeadBlob(ref, Sha256Digest("absent")).status().code(),
            absl::StatusCode::kNotFound);
  // Cross-repository mount.
  PushBlobOptions mount;
  mount.mount_from = "dadi/app";
  Reference other = Repo(registry_->host(), "dadi/other", "v1");
  EXPECT_EQ(*Push(*client, other, big, mount), PushOutcome::kMounted);
  EXPECT_EQ(*client->GetBlob(other, Sha256Digest(big)), big);

  std::string digest = PushImage(*client, ref, big);
  absl::StatusOr<FetchedManifest> m = client->GetManifest(ref);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->digest, digest);
  EXPECT_EQ(m->media_type, kOciManifestMediaType);
  Reference by_digest = ref;
  by_digest.tag.clear();
  by_digest.digest = digest;
  absl::StatusOr<ResolvedImage> img = client->ResolveImage(by_digest);
  ASSERT_TRUE(img.ok()) << img.status();
  ASSERT_EQ(img->manifest.layers.size(), 1u);
  EXPECT_EQ(img->manifest.layers[0].digest, Sha256Digest(big));

  // An index with two platforms: the client picks ours.
  ImageIndex idx;
  idx.media_type = std::string(kOciIndexMediaType);
  Descriptor mine{std::string(kOciManifestMediaType),
                  digest,
                  static_cast<int64_t>(m->body.size()),
                  {},
                  {},
                  HostPlatform(),
                  ""};
  Descriptor foreign = mine;
  foreign.platform->architecture = "s390x-nope";
  idx.manifests = {foreign, mine};
  Reference tagged_index = Repo(registry_->host(), "dadi/app", "multi");
  ASSERT_TRUE(client->PutManifest(tagged_index, kOciIndexMediaType, SerializeImageIndex(idx)).ok());
  img = client->ResolveImage(tagged_index);
  ASSERT_TRUE(img.ok()) << img.status();
  EXPECT_EQ(img->raw.digest, digest);
  EXPECT_FALSE(img->index_digest.empty());
  EXPECT_EQ(client->GetManifest(Repo(registry_->host(), "dadi/app", "nope")).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(RegistryTest, RangeReadsOfEveryAlignment) {
  StartRegistry();
  auto client = NewClient(PlainConfig(registry_->host()));
  Reference ref = Repo(registry_->host(), "dadi/range");
  std::string data = RandomBytes(2 * 1024 * 1024 + 4097, 3);
  ASSERT_TRUE(Push(*client, ref, data).ok());
  std::string digest = Sha256Digest(data);
  for (uint64_t off : {uint64_t{0}, uint64_t{1}, uint64_t{511}, uint64_t{4096}, uint64_t{65535},
                       uint64_t{1 << 20}, uint64_t{data.size() - 1}}) {
    for (size_t n : {size_t{1}, size_t{7}, size_t{4096}, size_t{1 << 20}}) {
      if (off + n > data.size()) n = data.size() - off;
      std::string buf(n, '\0');
      absl::Status s = client->ReadBlobRange(ref, digest, off, n, buf.data());
      ASSERT_TRUE(s.ok()) << s;
      EXPECT_EQ(buf, data.substr(off, n)) << off << "+" << n;
    }
  }
  std::string buf(10, '\0');
  EXPECT_FALSE(client->ReadBlobRange(ref, digest, data.size() + 5, 10, buf.data()).ok());
}

TEST_F(RegistryTest, RemoteBlobReadsThroughTheCache) {
  StartRegistry();
  auto client = NewClient(PlainConfig(registry_->host()));
  Reference ref = Repo(registry_->host(), "dadi/blob");
  std::string data = RandomBytes(5 * 1024 * 1024 + 123, 4);
  ASSERT_TRUE(Push(*client, ref, data).ok());
  auto cache = Cache(dir_.Join("cache"));
  auto blob = RemoteBlob::Open(client, ref, Sha256Digest(data), data.size(), cache);
  ASSERT_TRUE(blob.ok()) << blob.status();
  const RandomAccessFile& f = **blob;
  EXPECT_EQ(f.Size(), data.size());
  // Several threads, random reads.
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      for (int i = 0; i < 40; ++i) {
        uint64_t off = rng() % data.size();
        size_t n = 1 + rng() % (300 * 1024);
        std::string buf(n, '\0');
        absl::StatusOr<size_t> got = f.Pread(off, n, buf.data());
        if (!got.ok() || buf.substr(0, *got) != data.substr(off, *got)) bad++;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(bad.load(), 0);
  NodeCacheStats st = cache->Stats();
  EXPECT_LE(st.miss_units, 6u);  // each 1 MiB unit fetched at most once
  // Invalidate drops a unit; the next read refetches it.
  uint64_t before = cache->Stats().fetch_requests;
  ASSERT_TRUE((*blob)->Invalidate(1 << 20, 10).ok());
  std::string buf(100, '\0');
  ASSERT_TRUE(f.Pread((1 << 20) + 5, 100, buf.data()).ok());
  EXPECT_EQ(buf, data.substr((1 << 20) + 5, 100));
  EXPECT_EQ(cache->Stats().fetch_requests, before + 1);
  // Background download: everything arrives, the digest verifies, reads stay local.
  BackgroundDownloadOptions rate_limited;
  rate_limited.rate_limit_bytes_per_sec = 256 << 20;
  ASSERT_TRUE((*blob)->StartBackgroundDownload(rate_limited).ok());
  ASSERT_TRUE((*blob)->WaitBackgroundDownload().ok());
  EXPECT_TRUE((*blob)->IsLocal());
  uint64_t requests = client->Stats().http.requests;
  std::string all(data.size(), '\0');
  ASSERT_EQ(*f.Pread(0, data.size(), all.data()), data.size());
  EXPECT_EQ(all, data);
  EXPECT_EQ(client->Stats().http.requests, requests);
}

TEST_F(RegistryTest, BackgroundDownloadDiscardsDigestMismatch) {
  // A "registry" that serves the wrong bytes for the blob.
  std::string lie = RandomBytes(2 * 1024 * 1024, 5);
  auto server = HttpServer::Start([&](const HttpServerRequest& req) -> HttpServerResponse {
    auto range = req.headers.find("range");
    if (range == req.headers.end()) return {200, {}, lie};
    absl::string_view v = range->second;
    v.remove_prefix(6);  // "bytes="
    size_t dash = v.find('-');
    uint64_t a = *ParseDecimal(v.substr(0, dash)), b = *ParseDecimal(v.substr(dash + 1));
    return {206,
            {{"Content-Range", absl::StrCat("bytes ", a, "-", b, "/", lie.size())}},
            lie.substr(a, b - a + 1)};
  });
  ASSERT_TRUE(server.ok());
  std::string host = absl::StrCat("127.0.0.1:", (*server)->port());
  auto client = NewClient(PlainConfig(host));
  auto cache = Cache(dir_.Join("cache"));
  std::string claimed = Sha256Digest("the real content");
  auto blob = RemoteBlob::Open(client, Repo(host, "dadi/liar"), claimed, lie.size(), cache);
  ASSERT_TRUE(blob.ok());
  ASSERT_TRUE((*blob)->StartBackgroundDownload().ok());
  EXPECT_EQ((*blob)->WaitBackgroundDownload().code(), absl::StatusCode::kDataLoss);
  EXPECT_FALSE((*blob)->IsLocal());
  EXPECT_EQ((*blob)->cached()->PresentUnits(), 0u);
}

// A registry that revokes tokens: a cached token that gets a 401 is dropped and a new one
// fetched once, transparently to the reader.
TEST_F(RegistryTest, BearerTokenIsRefreshedOn401) {
  std::string data = RandomBytes(10000, 14);
  std::atomic<int> generation{1};
  std::atomic<int> token_requests{0};
  std::string realm;
  auto server = HttpServer::Start([&](const HttpServerRequest& req) -> HttpServerResponse {
    if (req.path == "/token") {
      token_requests++;
      return {
          200, {}, absl::StrCat(R"({"token":"tok-)", generation.load(), R"(","expires_in":300})")};
    }
    auto auth = req.headers.find("authorization");
    if (auth == req.headers.end() ||
        auth->second != absl::StrCat("Bearer tok-", generation.load())) {
      return {401,
              {{"WWW-Authenticate",
                absl::StrCat("Bearer realm=\"", realm, "\",service=\"fake\",scope=\"x\"")}},
              R"({"errors":[{"code":"UNAUTHORIZED","message":"token revoked"}]})"};
    }
    return {
        206, {{"Content-Range", absl::StrCat("bytes 0-99/", data.size())}}, data.substr(0, 100)};
  });
  ASSERT_TRUE(server.ok());
  realm = (*server)->base() + "/token";
  std::string host = absl::StrCat("127.0.0.1:", (*server)->port());
  auto client = NewClient(PlainConfig(host));
  Reference ref = Repo(host, "dadi/revoked");
  std::string buf(100, '\0');
  ASSERT_TRUE(client->ReadBlobRange(ref, Sha256Digest(data), 0, 100, buf.data()).ok());
  ASSERT_TRUE(client->ReadBlobRange(ref, Sha256Digest(data), 0, 100, buf.data()).ok());
  EXPECT_EQ(token_requests.load(), 1);  // cached
  generation = 2;                       // the registry revokes tok-1
  absl::Status s = client->ReadBlobRange(ref, Sha256Digest(data), 0, 100, buf.data());
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(buf, data.substr(0, 100));
  EXPECT_EQ(token_requests.load(), 2);
  EXPECT_EQ(client->Stats().http.retries, 0u);
}

TEST_F(RegistryTest, IdentityTokenUsesTheRefreshTokenGrant) {
  std::string data = RandomBytes(1000, 15);
  std::string realm, form;
  auto server = HttpServer::Start([&](const HttpServerRequest& req) -> HttpServerResponse {
    if (req.path == "/token") {
      form = req.body;
      if (req.method != "POST" || !absl::StrContains(req.body, "refresh_token=refresh-me")) {
        return {401, {}, "{}"};
      }
      return {200, {}, R"({"access_token":"oauth-tok","expires_in":300})"};
    }
    auto auth = req.headers.find("authorization");
    if (auth == req.headers.end() || auth->second != "Bearer oauth-tok") {
      return {401,
              {{"WWW-Authenticate", absl::StrCat("Bearer realm=\"", realm, "\",service=\"svc\"")}},
              ""};
    }
    return {206, {{"Content-Range", absl::StrCat("bytes 0-9/", data.size())}}, data.substr(0, 10)};
  });
  ASSERT_TRUE(server.ok());
  realm = (*server)->base() + "/token";
  std::string host = absl::StrCat("127.0.0.1:", (*server)->port());
  RegistryConfig c = PlainConfig(host);
  c.hosts[host].credentials = Credentials{"", "", "refresh-me"};
  auto client = NewClient(c);
  std::string buf(10, '\0');
  absl::Status s =
      client->ReadBlobRange(Repo(host, "dadi/oauth"), Sha256Digest(data), 0, 10, buf.data());
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(buf, data.substr(0, 10));
  EXPECT_TRUE(absl::StrContains(form, "grant_type=refresh_token"));
  EXPECT_TRUE(absl::StrContains(form, "service=svc"));
  EXPECT_TRUE(absl::StrContains(form, "scope=repository%3Adadi%2Foauth%3Apull"));
}

TEST_F(RegistryTest, BasicAuthWithHtpasswd) {
  TestRegistryOptions o;
  o.htpasswd_user = "alice";
  o.htpasswd_password = "s3cret";
  StartRegistry(o);
  Reference ref = Repo(registry_->host(), "dadi/basic", "v1");
  std::string data = RandomBytes(100000, 6);
  {
    auto anon = NewClient(PlainConfig(registry_->host()));
    absl::StatusOr<PushOutcome> r = Push(*anon, ref, data);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kUnauthenticated) << r.status();
  }
  {
    RegistryConfig c = PlainConfig(registry_->host());
    c.hosts[registry_->host()].credentials = Credentials{"alice", "wrong", ""};
    absl::StatusOr<PushOutcome> r = Push(*NewClient(c), ref, data);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kUnauthenticated) << r.status();
    EXPECT_FALSE(absl::StrContains(r.status().message(), "wrong"));
    EXPECT_EQ(NewClient(c)->Stats().http.retries, 0u);
  }
  // Credentials from a docker config.json.
  RegistryConfig c = PlainConfig(registry_->host());
  std::string cfg = dir_.Join("config.json");
  std::ofstream(cfg) << R"({"auths":{")" << registry_->host() << R"(":{"auth":")"
                     << Base64Encode("alice:s3cret") << R"("}}})";
  ASSERT_TRUE(LoadDockerConfigFile(cfg, &c).ok());
  auto client = NewClient(c);
  ASSERT_TRUE(Push(*client, ref, data).ok());
  EXPECT_EQ(*client->GetBlob(ref, Sha256Digest(data)), data);
  std::string buf(10, '\0');
  ASSERT_TRUE(client->ReadBlobRange(ref, Sha256Digest(data), 5, 10, buf.data()).ok());
  EXPECT_EQ(buf, data.substr(5, 10));
}

TEST_F(RegistryTest, BearerTokenAuth) {
  auto tokens = TokenServer::Start(dir_.path(), {{"bob", "hunter2"}}, /*anonymous pull=*/true,
                                   /*expires_in=*/2);
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  TestRegistryOptions o;
  o.token_realm = (*tokens)->realm();
  o.token_service = TokenServer::kService;
  o.token_issuer = TokenServer::kIssuer;
  o.token_cert = (*tokens)->cert_path();
  StartRegistry(o);
  Reference ref = Repo(registry_->host(), "dadi/token", "v1");
  std::string data = RandomBytes(3 * 1024 * 1024, 7);

  // Anonymous: pull scope only, so a push is refused.
  auto anon = NewClient(PlainConfig(registry_->host()));
  absl::StatusOr<PushOutcome> refused = Push(*anon, ref, data);
  EXPECT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnauthenticated) << refused.status();

  RegistryConfig c = PlainConfig(registry_->host());
  c.hosts[registry_->host()].credentials = Credentials{"bob", "hunter2", ""};
  auto client = NewClient(c);
  ASSERT_TRUE(Push(*client, ref, data).ok());
  PushImage(*client, ref, data);

  // Anonymous pulls work; the token is cached per scope.
  ASSERT_TRUE(anon->GetManifest(ref).ok());
  int fetched = (*tokens)->token_requests();
  std::string buf(4096, '\0');
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(anon->ReadBlobRange(ref, Sha256Digest(data), i * 4096, 4096, buf.data()).ok());
    EXPECT_EQ(buf, data.substr(i * 4096, 4096));
  }
  EXPECT_EQ((*tokens)->token_requests(), fetched);
  // After expiry a new token is fetched.
  absl::SleepFor(absl::Milliseconds(2100));
  ASSERT_TRUE(anon->ReadBlobRange(ref, Sha256Digest(data), 0, 4096, buf.data()).ok());
  EXPECT_GT((*tokens)->token_requests(), fetched);

  // Wrong password: the token server refuses; no retries on auth failures.
  RegistryConfig bad = PlainConfig(registry_->host());
  bad.hosts[registry_->host()].credentials = Credentials{"bob", "nope", ""};
  auto wrong = NewClient(bad);
  absl::StatusOr<FetchedManifest> m = wrong->GetManifest(ref);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kUnauthenticated) << m.status();
  EXPECT_EQ(wrong->Stats().http.retries, 0u);
}

TEST_F(RegistryTest, TlsWithGeneratedCa) {
  TestRegistryOptions o;
  o.tls = true;
  StartRegistry(o);
  Reference ref = Repo(registry_->host(), "dadi/tls");
  std::string data = RandomBytes(50000, 8);
  // Unknown CA: refused, and not retried.
  {
    auto client = NewClient(FastConfig());
    absl::StatusOr<PushOutcome> r = Push(*client, ref, data);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
    EXPECT_EQ(client->Stats().http.retries, 0u);
  }
  RegistryConfig c = FastConfig();
  c.hosts[registry_->host()].ca_file = registry_->pki().ca_cert;
  auto client = NewClient(c);
  ASSERT_TRUE(Push(*client, ref, data).ok());
  std::string buf(100, '\0');
  ASSERT_TRUE(client->ReadBlobRange(ref, Sha256Digest(data), 1000, 100, buf.data()).ok());
  EXPECT_EQ(buf, data.substr(1000, 100));
  // Insecure: no verification, still TLS.
  RegistryConfig insecure = FastConfig();
  insecure.hosts[registry_->host()].insecure_skip_verify = true;
  EXPECT_EQ(*NewClient(insecure)->HeadBlob(ref, Sha256Digest(data)), data.size());
}

TEST_F(RegistryTest, MirrorsWithADeadFirstMirror) {
  StartRegistry();
  auto proxy = FaultProxy::Start(registry_->port());
  ASSERT_TRUE(proxy.ok());
  std::string data = RandomBytes(1 << 20, 9);
  Reference ref = Repo(registry_->host(), "dadi/mirror", "v1");
  ASSERT_TRUE(Push(*NewClient(PlainConfig(registry_->host())), ref, data).ok());
  // The origin is named by a host nobody answers on; the live mirror is the proxy.
  std::string origin = absl::StrCat("127.0.0.1:", dadi::testing::FreeLoopbackPort());
  RegistryConfig c = PlainConfig(origin);
  c.hosts[origin].mirrors = {absl::StrCat("http://127.0.0.1:", dadi::testing::FreeLoopbackPort()),
                             "http://" + (*proxy)->host()};
  auto client = NewClient(c);
  Reference via = Repo(origin, "dadi/mirror", "v1");
  std::string buf(4096, '\0');
  ASSERT_TRUE(client->ReadBlobRange(via, Sha256Digest(data), 100, 4096, buf.data()).ok());
  EXPECT_EQ(buf, data.substr(100, 4096));
  EXPECT_GT((*proxy)->connections(), 0);
  EXPECT_GE(client->Stats().mirror_fallbacks, 1u);
  // Mirrors and then the dead origin: a clear error.
  (*proxy)->Push(Fault::Status(404));
  absl::StatusOr<uint64_t> gone = client->HeadBlob(via, Sha256Digest("not there"));
  EXPECT_FALSE(gone.ok());
}

TEST_F(RegistryTest, HttpProxyAndNoProxyAreHonoured) {
  StartRegistry();
  // The fault proxy relays bytes; docker-registry accepts the absolute-form request line an HTTP
  // proxy receives, so it stands in for a forward proxy (e.g. a P2P daemon) here.
  auto proxy = FaultProxy::Start(registry_->port());
  ASSERT_TRUE(proxy.ok());
  std::string data = RandomBytes(100000, 13);
  Reference ref = Repo(registry_->host(), "dadi/proxied");
  ASSERT_TRUE(Push(*NewClient(PlainConfig(registry_->host())), ref, data).ok());
  ProxySettings via_proxy;
  via_proxy.http_proxy = "http://" + (*proxy)->host();
  RegistryClient proxied(PlainConfig(registry_->host()), std::make_shared<HttpClient>(via_proxy));
  std::string buf(1000, '\0');
  ASSERT_TRUE(proxied.ReadBlobRange(ref, Sha256Digest(data), 10, 1000, buf.data()).ok());
  EXPECT_EQ(buf, data.substr(10, 1000));
  int connections = (*proxy)->connections();
  EXPECT_GT(connections, 0);
  ProxySettings bypass = via_proxy;
  bypass.no_proxy = "127.0.0.1";
  RegistryClient direct(PlainConfig(registry_->host()), std::make_shared<HttpClient>(bypass));
  ASSERT_TRUE(direct.ReadBlobRange(ref, Sha256Digest(data), 10, 1000, buf.data()).ok());
  EXPECT_EQ((*proxy)->connections(), connections);
}

TEST_F(RegistryTest, RedirectTargetIsCachedForRangeReads) {
  StartRegistry();
  std::string data = RandomBytes(4 << 20, 10);
  Reference ref = Repo(registry_->host(), "dadi/redirect");
  ASSERT_TRUE(Push(*NewClient(PlainConfig(registry_->host())), ref, data).ok());
  std::string target =
      absl::StrCat("http://", registry_->host(), "/v2/dadi/redirect/blobs/", Sha256Digest(data));
  auto front = HttpServer::Start([&](const HttpServerRequest&) -> HttpServerResponse {
    return {307, {{"Location", target}}, ""};
  });
  ASSERT_TRUE(front.ok());
  std::string host = absl::StrCat("127.0.0.1:", (*front)->port());
  auto client = NewClient(PlainConfig(host));
  auto cache = Cache(dir_.Join("cache"));
  auto blob =
      RemoteBlob::Open(client, Repo(host, "dadi/redirect"), Sha256Digest(data), data.size(), cache);
  ASSERT_TRUE(blob.ok());
  for (uint64_t off = 0; off < data.size(); off += 1 << 20) {
    std::string buf(1000, '\0');
    ASSERT_TRUE((*blob)->Pread(off + 3, 1000, buf.data()).ok());
    EXPECT_EQ(buf, data.substr(off + 3, 1000));
  }
  EXPECT_EQ((*front)->requests(), 1);
  EXPECT_GE(client->Stats().redirect_cache_hits, 3u);
}

// `n` sorted, disjoint, non-empty ranges scattered over [0, size).
std::vector<ByteRange> ScatteredRanges(uint64_t size, size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<ByteRange> out;
  const uint64_t slot = size / n;
  for (size_t i = 0; i < n; ++i) {
    uint64_t len = 1 + rng() % std::min<uint64_t>(slot / 2, 70000);
    uint64_t off = i * slot + rng() % (slot - len);
    out.push_back({off, len});
  }
  return out;
}

std::string Expected(const std::string& data, const std::vector<ByteRange>& ranges) {
  std::string out;
  for (const ByteRange& r : ranges) out += data.substr(r.offset, r.length);
  return out;
}

absl::Status ReadRanges(const RegistryClient& c, const Reference& repo, const std::string& digest,
                        const std::vector<ByteRange>& ranges, std::string* out) {
  uint64_t total = 0;
  for (const ByteRange& r : ranges) total += r.length;
  out->assign(total, '\0');
  return c.ReadBlobRanges(repo, digest, ranges, out->data());
}

TEST_F(RegistryTest, MultiRangeReadIsOneRequest) {
  StartRegistry();
  auto client = NewClient(PlainConfig(registry_->host()));
  Reference ref = Repo(registry_->host(), "dadi/multirange");
  std::string data = RandomBytes(5 * 1024 * 1024 + 3, 20);
  ASSERT_TRUE(Push(*client, ref, data).ok());
  std::string digest = Sha256Digest(data);
  std::vector<ByteRange> ranges = ScatteredRanges(data.size(), 60, 21);
  ranges.front() = {0, 1};
  ranges.back().length = data.size() - ranges.back().offset;  // to the last byte
  HttpStats before_stats = client->Stats().http;
  std::string got;
  absl::Status s = ReadRanges(*client, ref, digest, ranges, &got);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_TRUE(got == Expected(data, ranges));
  HttpStats after_stats = client->Stats().http;
  EXPECT_EQ(after_stats.requests - before_stats.requests, 1u);
  // docker-registry answered with the ranges (multipart/byteranges), not the whole blob.
  EXPECT_LT(after_stats.bytes_received - before_stats.bytes_received,
            got.size() + 256 * ranges.size() + 4096);
  uint64_t before = after_stats.requests;

  // Adjacent ranges and a long list (split into several GETs by the Range header's size).
  ranges = ScatteredRanges(data.size(), 1500, 22);
  ranges[1].offset = ranges[0].offset + ranges[0].length;
  before = client->Stats().http.requests;
  s = ReadRanges(*client, ref, digest, ranges, &got);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_TRUE(got == Expected(data, ranges));
  uint64_t requests = client->Stats().http.requests - before;
  EXPECT_GE(requests, 2u);
  EXPECT_LE(requests, 20u);

  // Unsorted or overlapping ranges are refused.
  EXPECT_EQ(client->ReadBlobRanges(ref, digest, {{10, 5}, {12, 5}}, got.data()).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client->ReadBlobRanges(ref, digest, {{10, 5}, {0, 5}}, got.data()).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client->ReadBlobRanges(ref, digest, {{10, 0}, {20, 5}}, got.data()).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(client->ReadBlobRanges(ref, digest, {}, got.data()).ok());
}

TEST_F(RegistryTest, MultiRangeReadOfAnAbsentBlobIsNotFound) {
  StartRegistry();
  auto client = NewClient(PlainConfig(registry_->host()));
  Reference ref = Repo(registry_->host(), "dadi/multirange");
  ASSERT_TRUE(Push(*client, ref, RandomBytes(1000, 23)).ok());
  std::string got;
  uint64_t before = client->Stats().http.requests;
  absl::Status s = ReadRanges(*client, ref, Sha256Digest("absent"), {{0, 10}, {100, 10}}, &got);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_EQ(client->Stats().http.requests - before, 1u);  // no range-by-range fallback
}

// A registry (an HttpServer serving one blob) answering multi-range GETs in each way.
class MultiRangeAnswerTest : public ::testing::TestWithParam<dadi::testing::MultiRangeMode> {};

TEST_P(MultiRangeAnswerTest, CorrectBytesWithOrWithoutFallback) {
  using dadi::testing::MultiRangeMode;
  const MultiRangeMode mode = GetParam();
  // Larger than the 16 MiB floor of the body limit, so that a whole blob cannot be taken.
  std::string data = RandomBytes((17 << 20) + 5, 24);
  std::string digest = Sha256Digest(data);
  std::string path = absl::StrCat("/v2/dadi/answers/blobs/", digest);
  auto server = HttpServer::Start([&](const HttpServerRequest& req) -> HttpServerResponse {
    if (req.path != path) return {404, {}, ""};
    return dadi::testing::ServeBlobRanges(req, data, mode);
  });
  ASSERT_TRUE(server.ok());
  std::string host = absl::StrCat("127.0.0.1:", (*server)->port());
  auto client = NewClient(PlainConfig(host));
  std::vector<ByteRange> ranges = ScatteredRanges(data.size(), 8, 25);
  std::string got;
  absl::Status s = ReadRanges(*client, Repo(host, "dadi/answers"), digest, ranges, &got);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_TRUE(got == Expected(data, ranges));
  const bool one_request = mode == MultiRangeMode::kMultipart ||
                           mode == MultiRangeMode::kMultipartReversed ||
                           mode == MultiRangeMode::kCoalesce;
  // Otherwise: the multi-range GET, then one GET per range.
  EXPECT_EQ((*server)->requests(), one_request ? 1 : 1 + static_cast<int>(ranges.size()));
}

INSTANTIATE_TEST_SUITE_P(Answers, MultiRangeAnswerTest,
                         ::testing::Values(dadi::testing::MultiRangeMode::kMultipart,
                                           dadi::testing::MultiRangeMode::kMultipartReversed,
                                           dadi::testing::MultiRangeMode::kMultipartDropLast,
                                           dadi::testing::MultiRangeMode::kCoalesce,
                                           dadi::testing::MultiRangeMode::kFirstRangeOnly,
                                           dadi::testing::MultiRangeMode::kWholeBlob));

TEST(MultiRangeFallbackTest, WholeSmallBlobIsSliced) {
  std::string data = RandomBytes(1 << 20, 26);
  std::string digest = Sha256Digest(data);
  auto server = HttpServer::Start([&](const HttpServerRequest& req) -> HttpServerResponse {
    return dadi::testing::ServeBlobRanges(req, data, dadi::testing::MultiRangeMode::kWholeBlob);
  });
  ASSERT_TRUE(server.ok());
  std::string host = absl::StrCat("127.0.0.1:", (*server)->port());
  auto client = NewClient(PlainConfig(host));
  std::vector<ByteRange> ranges = ScatteredRanges(data.size(), 30, 27);
  std::string got;
  absl::Status s = ReadRanges(*client, Repo(host, "dadi/small"), digest, ranges, &got);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_TRUE(got == Expected(data, ranges));
  EXPECT_EQ((*server)->requests(), 1);
}

// The registry redirects to a storage host: multi-range GETs go to the cached storage URL; a
// storage that answers them with the whole (large) object is remembered to get single ranges.
TEST(MultiRangeFallbackTest, RedirectedMultiRangeReads) {
  using dadi::testing::MultiRangeMode;
  std::string data = RandomBytes((17 << 20) + 1, 28);
  std::string digest = Sha256Digest(data);
  std::atomic<MultiRangeMode> mode{MultiRangeMode::kMultipart};
  auto storage = HttpServer::Start([&](const HttpServerRequest& req) -> HttpServerResponse {
    if (req.path != "/object") return {404, {}, ""};
    return dadi::testing::ServeBlobRanges(req, data, mode.load());
  });
  ASSERT_TRUE(storage.ok());
  std::string target = absl::StrCat((*storage)->base(), "/object?signature=x");
  auto front = HttpServer::Start([&](const HttpServerRequest&) -> HttpServerResponse {
    return {307, {{"Location", target}}, ""};
  });
  ASSERT_TRUE(front.ok());
  std::string host = absl::StrCat("127.0.0.1:", (*front)->port());
  Reference repo = Repo(host, "dadi/redirected");
  std::vector<ByteRange> ranges = ScatteredRanges(data.size(), 10, 29);
  std::string got;

  auto client = NewClient(PlainConfig(host));
  for (int i = 0; i < 2; ++i) {
    absl::Status s = ReadRanges(*client, repo, digest, ranges, &got);
    ASSERT_TRUE(s.ok()) << s;
    EXPECT_TRUE(got == Expected(data, ranges));
  }
  EXPECT_EQ((*front)->requests(), 1);
  EXPECT_EQ((*storage)->requests(), 2);
  EXPECT_EQ(client->Stats().redirect_cache_hits, 1u);

  // S3-like storage: the whole object for several ranges.
  mode = MultiRangeMode::kWholeBlob;
  int front_before = (*front)->requests(), storage_before = (*storage)->requests();
  client = NewClient(PlainConfig(host));
  absl::Status s = ReadRanges(*client, repo, digest, ranges, &got);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_TRUE(got == Expected(data, ranges));
  EXPECT_EQ((*front)->requests() - front_before, 1);
  EXPECT_EQ((*storage)->requests() - storage_before, 1 + static_cast<int>(ranges.size()));
  // Next time the storage URL gets single-range GETs only.
  storage_before = (*storage)->requests();
  s = ReadRanges(*client, repo, digest, ranges, &got);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_TRUE(got == Expected(data, ranges));
  EXPECT_EQ((*front)->requests() - front_before, 1);
  EXPECT_EQ((*storage)->requests() - storage_before, static_cast<int>(ranges.size()));
}

class FaultTest : public RegistryTest {
 protected:
  void SetUp() override {
    RegistryTest::SetUp();
    StartRegistry();
    auto p = FaultProxy::Start(registry_->port());
    ASSERT_TRUE(p.ok());
    proxy_ = std::move(*p);
    data_ = RandomBytes(3 << 20, 11);
    ASSERT_TRUE(Push(*NewClient(PlainConfig(registry_->host())),
                     Repo(registry_->host(), "dadi/faults"), data_)
                    .ok());
    ref_ = Repo(proxy_->host(), "dadi/faults");
  }
  // A fresh client (fresh connections) so that the next connection meets the next fault.
  std::shared_ptr<RegistryClient> Client() { return NewClient(PlainConfig(proxy_->host())); }
  // Reads 1 MiB at 4097 and checks the bytes; returns the status.
  absl::Status ReadChecked(const RegistryClient& c) {
    std::string buf(1 << 20, '\0');
    absl::Status s = c.ReadBlobRange(ref_, Sha256Digest(data_), 4097, buf.size(), buf.data());
    if (s.ok()) {
      EXPECT_EQ(buf, data_.substr(4097, buf.size()));
    }
    return s;
  }
  std::unique_ptr<FaultProxy> proxy_;
  std::string data_;
  Reference ref_;
};

TEST_F(FaultTest, ConnectionResetMidBodyIsRetried) {
  proxy_->Push(Fault::Reset(200000));
  auto c = Client();
  EXPECT_TRUE(ReadChecked(*c).ok());
  EXPECT_GE(c->Stats().http.retries, 1u);
}

TEST_F(FaultTest, TruncatedResponseIsRetried) {
  proxy_->Push(Fault::Truncate(70000));
  proxy_->Push(Fault::Truncate(40));  // cut inside the status line/headers
  auto c = Client();
  absl::Status s = ReadChecked(*c);
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_GE(c->Stats().http.requests, 3u);
}

TEST_F(FaultTest, ServiceUnavailableBurstAndTooManyRequests) {
  for (int i = 0; i < 2; ++i) proxy_->Push(Fault::Status(503));
  proxy_->Push(Fault::Status(429, "Retry-After: 1\r\n"));
  auto c = Client();
  EXPECT_TRUE(ReadChecked(*c).ok());
  EXPECT_EQ(c->Stats().http.retries, 3u);
}

TEST_F(FaultTest, StallTimesOutAndIsRetried) {
  proxy_->Push(Fault::Stall());
  auto c = Client();
  EXPECT_TRUE(ReadChecked(*c).ok());
  EXPECT_GE(c->Stats().http.retries, 1u);
}

TEST_F(FaultTest, GivesUpWithAClearErrorAfterTheConfiguredRetries) {
  for (int i = 0; i < 10; ++i) proxy_->Push(Fault::Status(503));
  auto c = Client();
  absl::Status s = ReadChecked(*c);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "503")) << s;
  EXPECT_EQ(c->Stats().http.requests, 4u);  // max_attempts
  proxy_->Clear();
}

TEST_F(FaultTest, AuthFailuresAreNotRetried) {
  proxy_->Push(Fault::Status(401));
  auto c = Client();
  absl::Status s = ReadChecked(*c);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnauthenticated) << s;
  EXPECT_EQ(c->Stats().http.retries, 0u);
}

TEST_F(FaultTest, RemoteBlobReturnsCorrectBytesOrAnError) {
  auto c = Client();
  auto cache = Cache(dir_.Join("cache"));
  auto blob = RemoteBlob::Open(c, ref_, Sha256Digest(data_), data_.size(), cache);
  ASSERT_TRUE(blob.ok());
  std::mt19937 rng(12);
  for (int i = 0; i < 12; ++i) {
    const size_t after_bytes = 1000 + rng() % 300000;
    proxy_->Push(i % 3 == 0 ? Fault::Reset(after_bytes) : Fault::Truncate(after_bytes));
    if (i % 4 == 0) proxy_->Push(Fault::Status(503));
  }
  for (int i = 0; i < 30; ++i) {
    uint64_t off = rng() % data_.size();
    size_t n = 1 + rng() % 200000;
    std::string buf(n, '\0');
    absl::StatusOr<size_t> got = (*blob)->Pread(off, n, buf.data());
    if (got.ok()) {
      EXPECT_EQ(buf.substr(0, *got), data_.substr(off, *got));
    } else {
      EXPECT_TRUE(absl::IsUnavailable(got.status()) || absl::IsDeadlineExceeded(got.status()))
          << got.status();
    }
  }
  proxy_->Clear();
}

}  // namespace
}  // namespace dadi::blockstore
