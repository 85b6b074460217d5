#include "blockstore/remote/auth.h"

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "blockstore/remote/reference.h"

namespace dadi::blockstore {
namespace {

constexpr size_t kMaxConfigBytes = 4 << 20;
constexpr size_t kMaxTokenResponseBytes = 1 << 20;

int Base64Value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+' || c == '-') return 62;
  if (c == '/' || c == '_') return 63;
  return -1;
}

std::string HostOfConfigKey(absl::string_view key) {
  absl::string_view k = key;
  if (!absl::ConsumePrefix(&k, "https://")) absl::ConsumePrefix(&k, "http://");
  size_t slash = k.find('/');
  if (slash != absl::string_view::npos) k = k.substr(0, slash);
  return NormalizeRegistryHost(k);
}

}  // namespace

std::string Base64Encode(absl::string_view data) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((data.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= data.size(); i += 3) {
    uint32_t v = (static_cast<uint8_t>(data[i]) << 16) | (static_cast<uint8_t>(data[i + 1]) << 8) |
                 static_cast<uint8_t>(data[i + 2]);
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(kAlphabet[(v >> 6) & 63]);
    out.push_back(kAlphabet[v & 63]);
  }
  size_t rest = data.size() - i;
  if (rest > 0) {
    uint32_t v = static_cast<uint8_t>(data[i]) << 16;
    if (rest == 2) v |= static_cast<uint8_t>(data[i + 1]) << 8;
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(rest == 2 ? kAlphabet[(v >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

absl::StatusOr<std::string> Base64Decode(absl::string_view text) {
  while (!text.empty() && text.back() == '=') text.remove_suffix(1);
  if (text.size() % 4 == 1) return absl::InvalidArgumentError("base64: truncated input");
  std::string out;
  out.reserve(text.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    int v = Base64Value(text[i]);
    if (v < 0) {
      return absl::InvalidArgumentError(absl::StrCat("base64: invalid character at offset ", i));
    }
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  return out;
}

std::string BasicAuthorization(const Credentials& creds) {
  return absl::StrCat("Basic ", Base64Encode(absl::StrCat(creds.username, ":", creds.password)));
}

absl::StatusOr<std::map<std::string, Credentials>> ParseDockerConfig(absl::string_view json) {
  if (json.size() > kMaxConfigBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "docker config: ", json.size(), " bytes is too large (max ", kMaxConfigBytes, ")"));
  }
  nlohmann::json doc = nlohmann::json::parse(json.begin(), json.end(), nullptr, false);
  if (doc.is_discarded()) return absl::InvalidArgumentError("docker config: not valid JSON");
  if (!doc.is_object()) return absl::InvalidArgumentError("docker config: not a JSON object");
  std::map<std::string, Credentials> out;
  auto auths = doc.find("auths");
  if (auths == doc.end()) return out;
  if (!auths->is_object()) {
    return absl::InvalidArgumentError("docker config: \"auths\" is not an object");
  }
  for (auto it = auths->begin(); it != auths->end(); ++it) {
    const std::string& key = it.key();
    const nlohmann::json& entry = it.value();
    if (!entry.is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat("docker config: auths[\"", key.substr(0, 200), "\"] is not an object"));
    }
    Credentials c;
    auto field = [&](const char* name, std::string* dst) -> absl::Status {
      auto f = entry.find(name);
      if (f == entry.end() || f->is_null()) return absl::OkStatus();
      if (!f->is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "docker config: auths[\"", key.substr(0, 200), "\"].", name, " is not a string"));
      }
      *dst = f->get<std::string>();
      return absl::OkStatus();
    };
    std::string auth;
    if (absl::Status s = field("auth", &auth); !s.ok()) return s;
    if (absl::Status s = field("username", &c.username); !s.ok()) return s;
    if (absl::Status s = field("password", &c.password); !s.ok()) return s;
    if (absl::Status s = field("identitytoken", &c.identity_token); !s.ok()) return s;
    if (!auth.empty()) {
      absl::StatusOr<std::string> decoded = Base64Decode(auth);
      if (!decoded.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "docker config: auths[\"", key.substr(0, 200), "\"].auth is not valid base64"));
      }
      size_t colon = decoded->find(':');
      if (colon == std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat(
            "docker config: auths[\"", key.substr(0, 200), "\"].auth is not user:password"));
      }
      c.username = decoded->substr(0, colon);
      c.password = decoded->substr(colon + 1);
    }
    if (c.empty()) continue;
    out[HostOfConfigKey(key)] = std::move(c);
  }
  return out;
}

absl::StatusOr<TokenResponse> ParseTokenResponse(absl::string_view json) {
  if (json.size() > kMaxTokenResponseBytes) {
    return absl::InvalidArgumentError("token response: too large");
  }
  nlohmann::json doc = nlohmann::json::parse(json.begin(), json.end(), nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) {
    return absl::InvalidArgumentError("token response: not a JSON object");
  }
  TokenResponse out;
  for (const char* name : {"token", "access_token"}) {
    auto f = doc.find(name);
    if (f != doc.end() && f->is_string() && !f->get_ref<const std::string&>().empty()) {
      out.token = f->get<std::string>();
      break;
    }
  }
  if (out.token.empty()) {
    return absl::InvalidArgumentError("token response: no \"token\" or \"access_token\" string");
  }
  auto exp = doc.find("expires_in");
  if (exp != doc.end()) {
    if (!exp->is_number()) {
      return absl::InvalidArgumentError("token response: \"expires_in\" is not a number");
    }
    double secs = exp->get<double>();
    // Clamp: a token valid for less than the spec's minimum of 60 s is still used once.
    if (!(secs >= 1)) secs = 60;
    if (secs > 86400 * 30) secs = 86400 * 30;
    out.expires_in = absl::Seconds(secs);
  }
  return out;
}

std::optional<std::string> TokenCache::Get(const std::string& key, absl::Time now) const {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(key);
  if (it == entries_.end() || it->second.expiry <= now) return std::nullopt;
  return it->second.token;
}

void TokenCache::Put(const std::string& key, std::string token, absl::Time expiry) {
  absl::MutexLock lock(&mu_);
  entries_[key] = Entry{std::move(token), expiry};
}

void TokenCache::Erase(const std::string& key) {
  absl::MutexLock lock(&mu_);
  entries_.erase(key);
}

}  // namespace dadi::blockstore
