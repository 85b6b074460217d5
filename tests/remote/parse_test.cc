// Parsers of outside bytes: references, WWW-Authenticate, Content-Range, multipart/byteranges,
// Retry-After, manifests, docker config.json, token responses, registry config.
#include <gtest/gtest.h>

#include <tuple>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

#include "blockstore/remote/auth.h"
#include "blockstore/remote/digest.h"
#include "blockstore/remote/http_client.h"
#include "blockstore/remote/http_parse.h"
#include "blockstore/remote/manifest.h"
#include "blockstore/remote/reference.h"
#include "blockstore/remote/registry_config.h"

namespace dadi::blockstore {
namespace {

const std::string kDigest =
    "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

TEST(ReferenceTest, DockerHubDefaults) {
  absl::StatusOr<Reference> r = ParseReference("ubuntu");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->registry, "registry-1.docker.io");
  EXPECT_EQ(r->repository, "library/ubuntu");
  EXPECT_EQ(r->tag, "latest");
  r = ParseReference("docker.io/foo/bar:1.0");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->registry, "registry-1.docker.io");
  EXPECT_EQ(r->repository, "foo/bar");
  EXPECT_EQ(r->tag, "1.0");
  r = ParseReference("index.docker.io/busybox");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->repository, "library/busybox");
}

TEST(ReferenceTest, HostPortTagDigest) {
  absl::StatusOr<Reference> r = ParseReference("127.0.0.1:5000/a/b-c/d_e:v1.2@" + kDigest);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->registry, "127.0.0.1:5000");
  EXPECT_EQ(r->repository, "a/b-c/d_e");
  EXPECT_EQ(r->tag, "v1.2");
  EXPECT_EQ(r->digest, kDigest);
  EXPECT_EQ(r->ManifestRef(), kDigest);
  EXPECT_EQ(r->String(), "127.0.0.1:5000/a/b-c/d_e:v1.2@" + kDigest);
  r = ParseReference("localhost/x");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->registry, "localhost");
  r = ParseReference("Registry.Example.com/x@" + kDigest);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->registry, "registry.example.com");
  EXPECT_TRUE(r->tag.empty());
  r = ParseReference("[::1]:5000/x:t");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->registry, "[::1]:5000");
}

TEST(ReferenceTest, RejectsBadInput) {
  for (const char* bad : {"", "UPPER/case", "a//b", "a/b:", "a/b:-tag", "a@sha256:123",
                          "host:99999999/a", "a/-b", "a/b__-c", ":tag", "a/b@", "a b"}) {
    EXPECT_FALSE(ParseReference(bad).ok()) << bad;
  }
  EXPECT_FALSE(ParseReference(std::string(5000, 'a')).ok());
  // 255 bytes is fine alone but not with the library/ prefix (found by fuzzing).
  EXPECT_FALSE(ParseReference(std::string(255, 'a')).ok());
  EXPECT_TRUE(ParseReference("example.com/" + std::string(255, 'a')).ok());
}

TEST(DigestTest, Sha256) {
  EXPECT_EQ(Sha256Digest(""), kDigest);
  EXPECT_TRUE(IsValidDigest(kDigest));
  EXPECT_FALSE(IsValidDigest("sha256:E3B0"));
  EXPECT_FALSE(IsValidDigest("md5:abc"));
}

TEST(ChallengeTest, BearerAndBasic) {
  absl::StatusOr<std::vector<AuthChallenge>> c = ParseAuthChallenges(
      R"(Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/ubuntu:pull")");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->size(), 1u);
  EXPECT_EQ((*c)[0].scheme, "bearer");
  EXPECT_EQ((*c)[0].Param("realm"), "https://auth.docker.io/token");
  EXPECT_EQ((*c)[0].Param("service"), "registry.docker.io");
  EXPECT_EQ((*c)[0].Param("scope"), "repository:library/ubuntu:pull");
  c = ParseAuthChallenges(R"(Basic realm="a \"quoted\" realm", Bearer realm=x , service = "s")");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->size(), 2u);
  EXPECT_EQ((*c)[0].Param("realm"), "a \"quoted\" realm");
  EXPECT_EQ((*c)[1].Param("realm"), "x");
  EXPECT_EQ((*c)[1].Param("service"), "s");
  c = ParseAuthChallenges("Negotiate abc==, Basic realm=r");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->size(), 2u);
}

TEST(ChallengeTest, Malformed) {
  for (const char* bad :
       {"", "Bearer realm=\"unterminated", "Bearer realm=a,b=", "=x", "Bearer a=b c=d"}) {
    EXPECT_FALSE(ParseAuthChallenges(bad).ok()) << bad;
  }
}

TEST(HttpParseTest, ContentRangeAndRetryAfter) {
  absl::StatusOr<ContentRange> r = ParseContentRange("bytes 0-1023/4096");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->first, 0u);
  EXPECT_EQ(r->last, 1023u);
  EXPECT_EQ(*r->total, 4096u);
  r = ParseContentRange("bytes 5-9/*");
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->total.has_value());
  for (const char* bad : {"bytes 9-5/10", "bytes 0-10/10", "items 0-1/2", "bytes -1/2",
                          "bytes 0-99999999999999999999999/2", "bytes 1-2"}) {
    EXPECT_FALSE(ParseContentRange(bad).ok()) << bad;
  }
  absl::Time now = absl::FromUnixSeconds(784111777);
  EXPECT_EQ(ParseRetryAfter("3", now), absl::Seconds(3));
  EXPECT_EQ(ParseRetryAfter("Sun, 06 Nov 1994 08:49:47 GMT", now), absl::Seconds(10));
  EXPECT_FALSE(ParseRetryAfter("soon", now).has_value());
  auto h = ParseHeaderLine("Content-Type:  application/json \r\n");
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->first, "content-type");
  EXPECT_EQ(h->second, "application/json");
  EXPECT_FALSE(ParseHeaderLine("HTTP/1.1 200 OK").has_value());
  absl::StatusOr<UrlParts> u = ParseHttpUrl("https://Host:5000/v2/x?y=1");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->authority, "host:5000");
  EXPECT_EQ(u->path_and_query, "/v2/x?y=1");
  EXPECT_FALSE(ParseHttpUrl("ftp://x").ok());
  EXPECT_FALSE(ParseHttpUrl("https://user:pw@host/").ok());
}

// A multipart/byteranges body as Go's http.ServeContent writes it.
std::string GoMultipart(const std::string& boundary,
                        const std::vector<std::tuple<uint64_t, std::string>>& parts,
                        uint64_t total) {
  std::string out;
  for (const auto& [first, data] : parts) {
    absl::StrAppend(&out, "--", boundary, "\r\nContent-Range: bytes ", first, "-",
                    first + data.size() - 1, "/", total,
                    "\r\nContent-Type: application/octet-stream\r\n\r\n", data, "\r\n");
  }
  absl::StrAppend(&out, "--", boundary, "--\r\n");
  return out;
}

TEST(MultipartTest, Boundary) {
  EXPECT_EQ(*ParseMultipartBoundary("multipart/byteranges; boundary=3d6b6a416f9b5"),
            "3d6b6a416f9b5");
  EXPECT_EQ(*ParseMultipartBoundary("Multipart/ByteRanges;charset=x;BOUNDARY=\"a b:c\""), "a b:c");
  EXPECT_EQ(*ParseMultipartBoundary("multipart/byteranges ; boundary = \"q\\\"x\" ;"), "q\"x");
  EXPECT_EQ(
      *ParseMultipartBoundary(std::string("multipart/byteranges;boundary=") + std::string(70, 'b')),
      std::string(70, 'b'));
  for (const std::string& bad : std::vector<std::string>{
           "application/octet-stream", "multipart/mixed; boundary=x", "multipart/byteranges",
           "multipart/byteranges; charset=x",
           "multipart/byteranges; boundary=", "multipart/byteranges; boundary=\"\"",
           "multipart/byteranges; boundary=\"abc", "multipart/byteranges; boundary=\"a \"",
           "multipart/byteranges boundary=x", "multipart/byteranges; boundary=x; boundary=y",
           "multipart/byteranges;boundary=" + std::string(71, 'b')}) {
    absl::StatusOr<std::string> b = ParseMultipartBoundary(bad);
    EXPECT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(MultipartTest, GoStyleBody) {
  std::string a(100, 'a'), b = "--frontier\r\n--frontier--", c(1, 'c');
  // The parts are views into the body: it must outlive them.
  const std::string body = GoMultipart("frontier", {{0, a}, {500, b}, {999, c}}, 1000);
  absl::StatusOr<std::vector<BytesPart>> parts = ParseMultipartByteranges(body, "frontier");
  ASSERT_TRUE(parts.ok()) << parts.status();
  ASSERT_EQ(parts->size(), 3u);
  EXPECT_EQ((*parts)[0].first, 0u);
  EXPECT_EQ((*parts)[0].last, 99u);
  EXPECT_EQ((*parts)[0].data, a);
  EXPECT_EQ((*parts)[1].first, 500u);
  EXPECT_EQ((*parts)[1].data, b);  // the boundary inside the data is data
  EXPECT_EQ((*parts)[2].first, 999u);
  EXPECT_EQ((*parts)[2].last, 999u);
  EXPECT_EQ((*parts)[2].data, c);
}

TEST(MultipartTest, PreambleEpiloguePaddingAndOptionalHeaders) {
  std::string body =
      "This is a preamble.\r\n--b \t\r\ncontent-range:bytes 10-12/*\r\n\r\nxyz\r\n--b\r\n"
      "X-Other: 1\r\nCONTENT-RANGE: bytes 20-21/30\r\n\r\npq\r\n--b-- \r\nepilogue\r\n";
  absl::StatusOr<std::vector<BytesPart>> parts = ParseMultipartByteranges(body, "b");
  ASSERT_TRUE(parts.ok()) << parts.status();
  ASSERT_EQ(parts->size(), 2u);
  EXPECT_EQ((*parts)[0].first, 10u);
  EXPECT_EQ((*parts)[0].data, "xyz");
  EXPECT_EQ((*parts)[1].first, 20u);
  EXPECT_EQ((*parts)[1].last, 21u);
  EXPECT_EQ((*parts)[1].data, "pq");
}

TEST(MultipartTest, RejectsMalformedBodies) {
  const std::string good = GoMultipart("B", {{0, "hello"}, {10, "world"}}, 20);
  ASSERT_TRUE(ParseMultipartByteranges(good, "B").ok());
  std::vector<std::pair<std::string, std::string>> bad = {
      {"truncated data", good.substr(0, good.find("world") + 2)},
      {"no close delimiter", good.substr(0, good.rfind("--B--"))},
      {"close cut", good.substr(0, good.size() - 4)},
      {"wrong length", "--B\r\nContent-Range: bytes 0-5/20\r\n\r\nhello\r\n--B--\r\n"},
      {"short length", "--B\r\nContent-Range: bytes 0-3/20\r\n\r\nhello\r\n--B--\r\n"},
      {"no Content-Range", "--B\r\nContent-Type: text/plain\r\n\r\nhello\r\n--B--\r\n"},
      {"bad Content-Range", "--B\r\nContent-Range: bytes 5-0/20\r\n\r\nhello\r\n--B--\r\n"},
      {"two Content-Range",
       "--B\r\nContent-Range: bytes 0-4/20\r\nContent-Range: bytes 0-4/20\r\n\r\nhello\r\n--B--"},
      {"header cut", "--B\r\nContent-Range: bytes 0-4/20\r\n"},
      {"bad header line", "--B\r\nnot a header\r\n\r\nhello\r\n--B--\r\n"},
      {"junk after delimiter", "--Bx\r\nContent-Range: bytes 0-4/20\r\n\r\nhello\r\n--B--\r\n"},
      {"no delimiter", "hello"},
      {"no parts", "--B--\r\n"},
      {"empty", ""},
      {"huge range", "--B\r\nContent-Range: bytes 0-18446744073709551614/*\r\n\r\nx\r\n--B--"},
      {"headers too long", "--B\r\nX: " + std::string(5000, 'x') +
                               "\r\nContent-Range: bytes 0-0/1\r\n\r\nx\r\n--B--\r\n"},
  };
  for (const auto& [what, body] : bad) {
    absl::StatusOr<std::vector<BytesPart>> parts = ParseMultipartByteranges(body, "B");
    EXPECT_EQ(parts.status().code(), absl::StatusCode::kInvalidArgument) << what;
  }
  EXPECT_FALSE(ParseMultipartByteranges(good, "").ok());
  EXPECT_FALSE(ParseMultipartByteranges(good, std::string(71, 'B')).ok());
}

TEST(MultipartTest, PartCountIsBounded) {
  std::vector<std::tuple<uint64_t, std::string>> parts;
  for (uint64_t i = 0; i < kMaxMultipartParts; ++i) parts.emplace_back(i, "x");
  std::string body = GoMultipart("b", parts, kMaxMultipartParts + 1);
  absl::StatusOr<std::vector<BytesPart>> got = ParseMultipartByteranges(body, "b");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->size(), kMaxMultipartParts);
  parts.emplace_back(kMaxMultipartParts, "x");
  got = ParseMultipartByteranges(GoMultipart("b", parts, kMaxMultipartParts + 1), "b");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(got.status().message(), "more than")) << got.status();
}

TEST(RetryTest, BackoffBoundsAndRetryAfter) {
  RetryPolicy p;
  p.initial_backoff = absl::Milliseconds(100);
  p.max_backoff = absl::Milliseconds(400);
  for (int attempt = 1; attempt <= 6; ++attempt) {
    absl::Duration d = RetryBackoff(p, attempt, std::nullopt);
    EXPECT_LE(d, absl::Milliseconds(400));
    EXPECT_GE(d, absl::Milliseconds(50));
  }
  EXPECT_EQ(RetryBackoff(p, 1, absl::Seconds(2)), absl::Seconds(2));
  EXPECT_TRUE(IsRetryableHttpStatus(503));
  EXPECT_TRUE(IsRetryableHttpStatus(429));
  EXPECT_FALSE(IsRetryableHttpStatus(401));
  EXPECT_FALSE(IsRetryableHttpStatus(404));
}

TEST(ManifestTest, ParseSerializeRoundTrip) {
  ImageManifest m;
  m.media_type = std::string(kOciManifestMediaType);
  m.config = {std::string(kOciConfigMediaType), kDigest, 2, {}, {}, std::nullopt, ""};
  Descriptor layer{std::string(kOciLayerMediaType), kDigest, 0, {}, {{"a", "b"}}, std::nullopt, ""};
  m.layers = {layer, layer};
  m.annotations["x"] = "y";
  std::string text = SerializeImageManifest(m);
  absl::StatusOr<ImageManifest> back = ParseImageManifest(text);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->layers.size(), 2u);
  EXPECT_EQ(back->layers[0].annotations.at("a"), "b");
  EXPECT_EQ(back->config.size, 2);
  EXPECT_EQ(SerializeImageManifest(*back), text);
  absl::StatusOr<std::string> mt = DetectManifestMediaType(text, "");
  ASSERT_TRUE(mt.ok());
  EXPECT_EQ(*mt, kOciManifestMediaType);
}

TEST(ManifestTest, RejectsBadFields) {
  const std::string cfg = R"("config":{"digest":")" + kDigest + R"(","size":1})";
  for (const std::string& bad : std::vector<std::string>{
           "[]", "{", R"({"schemaVersion":1,)" + cfg + "}",
           R"({"schemaVersion":2,"config":{"digest":"sha256:zz","size":1}})",
           R"({"schemaVersion":2,"config":{"digest":")" + kDigest + R"(","size":-1}})",
           R"({"schemaVersion":2,"config":{"digest":")" + kDigest + R"(","size":"1"}})",
           R"({"schemaVersion":2,)" + cfg + R"(,"layers":{}})",
           R"({"schemaVersion":2,)" + cfg + R"(,"layers":[1]})",
           R"({"schemaVersion":2,)" + cfg + R"(,"annotations":{"a":1}})",
           R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",)" + cfg +
               "}"}) {
    absl::StatusOr<ImageManifest> m = ParseImageManifest(bad);
    EXPECT_FALSE(m.ok()) << bad;
    if (!m.ok()) {
      EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
    }
  }
}

TEST(ManifestTest, IndexPlatformSelection) {
  std::string text =
      R"({"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[
    {"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":")" +
      kDigest + R"(","size":10,"platform":{"architecture":"arm64","os":"linux","variant":"v8"}},
    {"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"sha256:)" +
      std::string(64, 'a') + R"(","size":11,"platform":{"architecture":"amd64","os":"linux"}}]})";
  absl::StatusOr<ImageIndex> idx = ParseImageIndex(text);
  ASSERT_TRUE(idx.ok()) << idx.status();
  Platform amd64{"amd64", "linux", "", "", {}};
  absl::StatusOr<Descriptor> d = SelectPlatform(*idx, amd64);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->size, 11);
  Platform arm{"arm64", "linux", "v8", "", {}};
  EXPECT_EQ(SelectPlatform(*idx, arm)->size, 10);
  absl::StatusOr<Descriptor> none = SelectPlatform(*idx, Platform{"s390x", "linux", "", "", {}});
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(*DetectManifestMediaType(text, "application/json"), kDockerManifestListMediaType);
}

TEST(AuthTest, Base64) {
  EXPECT_EQ(Base64Encode("user:pass"), "dXNlcjpwYXNz");
  EXPECT_EQ(*Base64Decode("dXNlcjpwYXNz"), "user:pass");
  EXPECT_EQ(*Base64Decode(Base64Encode("ab")), "ab");
  EXPECT_FALSE(Base64Decode("a$==").ok());
  EXPECT_FALSE(Base64Decode("abcde").ok());
}

TEST(AuthTest, DockerConfig) {
  absl::StatusOr<std::map<std::string, Credentials>> c = ParseDockerConfig(R"({"auths":{
    "https://index.docker.io/v1/":{"auth":"dXNlcjpwYXNz"},
    "127.0.0.1:5000":{"username":"u","password":"p"},
    "helper.example":{}}, "credsStore":"desktop"})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->size(), 2u);
  EXPECT_EQ(c->at("registry-1.docker.io").username, "user");
  EXPECT_EQ(c->at("registry-1.docker.io").password, "pass");
  EXPECT_EQ(c->at("127.0.0.1:5000").password, "p");
  absl::StatusOr<std::map<std::string, Credentials>> bad =
      ParseDockerConfig(R"({"auths":{"h":{"auth":"bm9jb2xvbg=="}}})");
  ASSERT_FALSE(bad.ok());
  // The message names the field, never the secret.
  EXPECT_EQ(std::string(bad.status().message()).find("nocolon"), std::string::npos);
  EXPECT_FALSE(ParseDockerConfig(R"({"auths":[]})").ok());
}

TEST(AuthTest, TokenResponseAndCache) {
  absl::StatusOr<TokenResponse> t = ParseTokenResponse(R"({"token":"abc","expires_in":300})");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->token, "abc");
  EXPECT_EQ(t->expires_in, absl::Seconds(300));
  t = ParseTokenResponse(R"({"access_token":"xyz"})");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->expires_in, absl::Seconds(60));
  EXPECT_FALSE(ParseTokenResponse(R"({"token":1})").ok());
  EXPECT_FALSE(ParseTokenResponse(R"({"token":"a","expires_in":"x"})").ok());
  TokenCache cache;
  absl::Time now = absl::Now();
  cache.Put("k", "tok", now + absl::Seconds(10));
  EXPECT_EQ(cache.Get("k", now).value_or(""), "tok");
  EXPECT_FALSE(cache.Get("k", now + absl::Seconds(11)).has_value());
}

TEST(RegistryConfigTest, Parse) {
  absl::StatusOr<RegistryConfig> c = ParseRegistryConfig(R"({
    "request_timeout_ms": 1500, "retry": {"max_attempts": 3, "initial_backoff_ms": 10},
    "hosts": {"docker.io": {"mirrors": ["http://127.0.0.1:1"], "username": "u", "password": "p"},
              "127.0.0.1:5000": {"plain_http": true, "insecure_skip_verify": true}}})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->request_timeout, absl::Milliseconds(1500));
  EXPECT_EQ(c->retry.max_attempts, 3);
  EXPECT_EQ(c->Host("docker.io").mirrors.size(), 1u);
  EXPECT_TRUE(c->Host("127.0.0.1:5000").plain_http);
  EXPECT_EQ(c->CredentialsFor("registry-1.docker.io")->username, "u");
  EXPECT_FALSE(c->CredentialsFor("other").has_value());
  EXPECT_FALSE(ParseRegistryConfig(R"({"hosts":{"h":{"plain_http":"yes"}}})").ok());
  EXPECT_FALSE(ParseRegistryConfig(R"({"retry":{"max_attempts":0}})").ok());
}

}  // namespace
}  // namespace dadi::blockstore
