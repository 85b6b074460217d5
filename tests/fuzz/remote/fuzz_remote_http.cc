// HTTP bytes from a registry or proxy: header lines, WWW-Authenticate, Content-Range,
// Retry-After, upload Range, URLs (Location, realm), and multipart/byteranges answers: the input
// up to its first '\n' is the Content-Type (a boundary of "B" when it has none), the rest the body.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "blockstore/remote/http_parse.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string in(reinterpret_cast<const char*>(data), size);
  using namespace dadi::blockstore;
  (void)ParseHeaderLine(in);
  absl::StatusOr<std::vector<AuthChallenge>> ch = ParseAuthChallenges(in);
  if (ch.ok() && ch->empty()) __builtin_trap();
  absl::StatusOr<ContentRange> cr = ParseContentRange(in);
  if (cr.ok() && (cr->last < cr->first || (cr->total && cr->last >= *cr->total))) {
    __builtin_trap();
  }
  (void)ParseRetryAfter(in, absl::UnixEpoch());
  (void)ParseUploadRange(in);
  absl::StatusOr<UrlParts> u = ParseHttpUrl(in);
  if (u.ok() &&
      (u->authority.empty() || u->path_and_query.empty() || u->path_and_query[0] != '/')) {
    __builtin_trap();
  }
  (void)UrlEncode(in);

  size_t nl = in.find('\n');
  absl::string_view type = absl::string_view(in).substr(0, nl);
  absl::string_view body =
      nl == std::string::npos ? absl::string_view() : absl::string_view(in).substr(nl + 1);
  absl::StatusOr<std::string> boundary = ParseMultipartBoundary(type);
  if (boundary.ok() && (boundary->empty() || boundary->size() > 70)) __builtin_trap();
  absl::StatusOr<std::vector<BytesPart>> parts =
      ParseMultipartByteranges(body, boundary.ok() ? *boundary : "B");
  if (parts.ok()) {
    if (parts->empty() || parts->size() > kMaxMultipartParts) __builtin_trap();
    for (const BytesPart& p : *parts) {
      if (p.last < p.first || p.data.size() - 1 != p.last - p.first) __builtin_trap();
      if (p.data.data() < body.data() ||
          p.data.data() + p.data.size() > body.data() + body.size()) {
        __builtin_trap();
      }
    }
  }
  return 0;
}
