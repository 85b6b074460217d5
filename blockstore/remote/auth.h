// Registry credentials and tokens: docker config.json, the token endpoint's JSON answer, the
// per-scope token cache. Secrets held here are never logged; Status messages name hosts and
// fields, never values.
#pragma once

#include <map>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace dadi::blockstore {

struct Credentials {
  std::string username;
  std::string password;        // or a personal access token
  std::string identity_token;  // docker "identitytoken": an OAuth2 refresh token
  bool empty() const { return username.empty() && password.empty() && identity_token.empty(); }
};

// Standard base64 (RFC 4648) with padding.
std::string Base64Encode(absl::string_view data);
// Accepts standard and URL-safe alphabets, with or without padding; fails on anything else.
absl::StatusOr<std::string> Base64Decode(absl::string_view text);

// "Basic base64(user:password)".
std::string BasicAuthorization(const Credentials& creds);

// Parses a docker config.json: `{"auths": {"host": {"auth": base64("user:pass")} | {"username",
// "password"} | {"identitytoken"}}}`. Keys may be URLs ("https://index.docker.io/v1/"); they are
// reduced to the host and normalised (docker.io -> registry-1.docker.io). Entries without
// credentials (credsStore helpers) are skipped.
absl::StatusOr<std::map<std::string, Credentials>> ParseDockerConfig(absl::string_view json);

// The token endpoint's answer: {"token" | "access_token", "expires_in", "issued_at"}.
struct TokenResponse {
  std::string token;
  absl::Duration expires_in = absl::Seconds(60);  // the spec's default when absent
};
absl::StatusOr<TokenResponse> ParseTokenResponse(absl::string_view json);

// Bearer tokens per (realm, service, scope) until shortly before expiry. Thread-safe.
class TokenCache {
 public:
  std::optional<std::string> Get(const std::string& key, absl::Time now) const;
  void Put(const std::string& key, std::string token, absl::Time expiry);
  void Erase(const std::string& key);

 private:
  struct Entry {
    std::string token;
    absl::Time expiry;
  };
  mutable absl::Mutex mu_;
  std::map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);
};

}  // namespace dadi::blockstore
