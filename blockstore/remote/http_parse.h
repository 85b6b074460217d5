// Parsers of HTTP bytes that come from a registry or a proxy: header lines, WWW-Authenticate
// challenges, Content-Range, multipart/byteranges bodies, Retry-After. Each bounds-checks its input
// and fails with INVALID_ARGUMENT saying what was wrong; none needs libcurl (they are fuzzed
// alone).
#pragma once

#include <cstdint>
#include <ctime>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace dadi::blockstore {

// One "Name: value" header line (CRLF already stripped or not). Returns the lowercase name and
// the value with surrounding whitespace removed; std::nullopt for a status line, an empty line
// or a line without a valid name.
std::optional<std::pair<std::string, std::string>> ParseHeaderLine(absl::string_view line);

// A WWW-Authenticate challenge: `Bearer realm="...",service="...",scope="..."`.
struct AuthChallenge {
  std::string scheme;                         // lowercase: "bearer", "basic", ...
  std::map<std::string, std::string> params;  // lowercase names, unquoted values
  std::string Param(const std::string& name) const {
    auto it = params.find(name);
    return it == params.end() ? std::string() : it->second;
  }
};

// Parses a WWW-Authenticate header value into its challenges (RFC 7235; several challenges may
// share one header). Token68 forms are accepted and ignored.
absl::StatusOr<std::vector<AuthChallenge>> ParseAuthChallenges(absl::string_view header);

// `Content-Range: bytes first-last/total` ("*" for an unknown total).
struct ContentRange {
  uint64_t first = 0;
  uint64_t last = 0;              // inclusive
  std::optional<uint64_t> total;  // absent for "*"
};
absl::StatusOr<ContentRange> ParseContentRange(absl::string_view value);

// A `206 multipart/byteranges` answer to a multi-range GET (RFC 7233 appendix A, RFC 2046
// §5.1.1): parts separated by "\r\n--boundary", each with its own headers (a Content-Range among
// them), closed by "\r\n--boundary--". Preamble and epilogue are ignored.
constexpr size_t kMaxMultipartParts = 4096;
// Header bytes of one part, its delimiter line included.
constexpr size_t kMaxMultipartPartHeaderBytes = 4096;

// One part of a multipart/byteranges body: its Content-Range and its bytes (a view into the body).
struct BytesPart {
  uint64_t first = 0;
  uint64_t last = 0;  // inclusive
  absl::string_view data;
};
// The boundary parameter of a `multipart/byteranges; boundary=...` Content-Type (quoted or not,
// 1..70 characters); INVALID_ARGUMENT for another media type or no boundary.
absl::StatusOr<std::string> ParseMultipartBoundary(absl::string_view content_type);
// The parts of a multipart/byteranges body delimited by `boundary`, in body order. Each part must
// carry a Content-Range whose length matches its bytes; at most kMaxMultipartParts parts.
absl::StatusOr<std::vector<BytesPart>> ParseMultipartByteranges(absl::string_view body,
                                                                absl::string_view boundary);

// `Retry-After`: delta-seconds or an HTTP-date (relative to `now`). Negative or past dates are
// zero; std::nullopt when unparseable.
std::optional<absl::Duration> ParseRetryAfter(absl::string_view value, absl::Time now);

// Registry upload `Range: 0-1234` (inclusive end, no unit) as returned by PATCH responses.
absl::StatusOr<std::pair<uint64_t, uint64_t>> ParseUploadRange(absl::string_view value);

// An absolute http(s) URL split into scheme ("http"/"https"), authority (host[:port]) and the
// rest (path, query; "/" when empty). INVALID_ARGUMENT for anything else.
struct UrlParts {
  std::string scheme;
  std::string authority;
  std::string path_and_query;
};
absl::StatusOr<UrlParts> ParseHttpUrl(absl::string_view url);

// Percent-encodes everything but unreserved characters (RFC 3986), for query values.
std::string UrlEncode(absl::string_view s);

// A decimal uint64 without sign, spaces or overflow.
std::optional<uint64_t> ParseDecimal(absl::string_view s);

}  // namespace dadi::blockstore
