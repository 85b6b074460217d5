// HTTP bytes from a registry or proxy: header lines, WWW-Authenticate, Content-Range,
// Retry-After, upload Range, URLs (Location, realm).
#include <cstddef>
#include <cstdint>
#include <string>

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
  return 0;
}
