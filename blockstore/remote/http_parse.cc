#include "blockstore/remote/http_parse.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace dadi::blockstore {
namespace {

constexpr size_t kMaxHeaderValue = 16 * 1024;

bool IsTokenChar(char c) {
  if (absl::ascii_isalnum(static_cast<unsigned char>(c))) return true;
  switch (c) {
    case '!':
    case '#':
    case '$':
    case '%':
    case '&':
    case '\'':
    case '*':
    case '+':
    case '-':
    case '.':
    case '^':
    case '_':
    case '`':
    case '|':
    case '~':
      return true;
    default:
      return false;
  }
}

void SkipSpace(absl::string_view& s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
}

absl::string_view TakeToken(absl::string_view& s) {
  size_t n = 0;
  while (n < s.size() && IsTokenChar(s[n])) ++n;
  absl::string_view tok = s.substr(0, n);
  s.remove_prefix(n);
  return tok;
}

}  // namespace

std::optional<uint64_t> ParseDecimal(absl::string_view s) {
  if (s.empty() || s.size() > 20) return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (UINT64_MAX - d) / 10) return std::nullopt;
    v = v * 10 + d;
  }
  return v;
}

std::optional<std::pair<std::string, std::string>> ParseHeaderLine(absl::string_view line) {
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
  size_t colon = line.find(':');
  if (colon == absl::string_view::npos || colon == 0) return std::nullopt;
  absl::string_view name = line.substr(0, colon);
  for (char c : name) {
    if (!IsTokenChar(c)) return std::nullopt;
  }
  absl::string_view value = absl::StripAsciiWhitespace(line.substr(colon + 1));
  if (value.size() > kMaxHeaderValue) value = value.substr(0, kMaxHeaderValue);
  return std::make_pair(absl::AsciiStrToLower(name), std::string(value));
}

absl::StatusOr<std::vector<AuthChallenge>> ParseAuthChallenges(absl::string_view header) {
  if (header.size() > kMaxHeaderValue) {
    return absl::InvalidArgumentError(absl::StrCat("WWW-Authenticate: header is ", header.size(),
                                                   " bytes (max ", kMaxHeaderValue, ")"));
  }
  std::vector<AuthChallenge> out;
  absl::string_view s = header;
  while (true) {
    // Skip empty list elements.
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == ',')) {
      s.remove_prefix(1);
    }
    if (s.empty()) break;
    absl::string_view scheme = TakeToken(s);
    if (scheme.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "WWW-Authenticate: expected an auth scheme at offset ", header.size() - s.size()));
    }
    AuthChallenge ch;
    ch.scheme = absl::AsciiStrToLower(scheme);
    // Parameters: name=value or name="quoted", separated by commas. A token not followed by
    // '=' starts the next challenge, except a token68 right after the scheme.
    bool had_token68 = false;
    while (true) {
      size_t commas = 0;
      while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == ',')) {
        if (s.front() == ',') ++commas;
        s.remove_prefix(1);
      }
      if (s.empty()) break;
      const bool first_item = commas == 0 && ch.params.empty() && !had_token68;
      absl::string_view save = s;
      absl::string_view name = TakeToken(s);
      if (name.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "WWW-Authenticate: unexpected character at offset ", header.size() - s.size()));
      }
      SkipSpace(s);
      if (s.empty() || s.front() != '=') {
        if (first_item) {
          had_token68 = true;
          continue;
        }
        s = save;
        break;
      }
      if (commas == 0 && !first_item) {
        return absl::InvalidArgumentError(
            absl::StrCat("WWW-Authenticate: expected ',' before parameter \"", name, "\""));
      }
      s.remove_prefix(1);  // '='
      SkipSpace(s);
      std::string value;
      if (!s.empty() && s.front() == '"') {
        s.remove_prefix(1);
        bool closed = false;
        while (!s.empty()) {
          char c = s.front();
          s.remove_prefix(1);
          if (c == '\\') {
            if (s.empty()) break;
            value.push_back(s.front());
            s.remove_prefix(1);
          } else if (c == '"') {
            closed = true;
            break;
          } else {
            value.push_back(c);
          }
        }
        if (!closed) {
          return absl::InvalidArgumentError(absl::StrCat(
              "WWW-Authenticate: unterminated quoted value of parameter \"", name, "\""));
        }
      } else {
        absl::string_view tok = TakeToken(s);
        if (tok.empty()) {
          if (first_item) {  // token68 with '=' padding, e.g. "Negotiate abc=="
            while (!s.empty() && s.front() == '=') s.remove_prefix(1);
            had_token68 = true;
            continue;
          }
          return absl::InvalidArgumentError(
              absl::StrCat("WWW-Authenticate: parameter \"", name, "\" has no value"));
        }
        value = std::string(tok);
      }
      if (ch.params.size() >= 32) {
        return absl::InvalidArgumentError("WWW-Authenticate: more than 32 parameters");
      }
      ch.params[absl::AsciiStrToLower(name)] = std::move(value);
    }
    out.push_back(std::move(ch));
    if (out.size() > 16) {
      return absl::InvalidArgumentError("WWW-Authenticate: more than 16 challenges");
    }
  }
  if (out.empty()) return absl::InvalidArgumentError("WWW-Authenticate: no challenge");
  return out;
}

absl::StatusOr<ContentRange> ParseContentRange(absl::string_view value) {
  absl::string_view s = absl::StripAsciiWhitespace(value);
  if (!absl::ConsumePrefix(&s, "bytes ")) {
    return absl::InvalidArgumentError("Content-Range: does not start with \"bytes \"");
  }
  s = absl::StripLeadingAsciiWhitespace(s);
  size_t dash = s.find('-');
  size_t slash = s.find('/');
  if (dash == absl::string_view::npos || slash == absl::string_view::npos || dash > slash) {
    return absl::InvalidArgumentError("Content-Range: expected first-last/total");
  }
  std::optional<uint64_t> first = ParseDecimal(s.substr(0, dash));
  std::optional<uint64_t> last = ParseDecimal(s.substr(dash + 1, slash - dash - 1));
  if (!first || !last) return absl::InvalidArgumentError("Content-Range: bad first or last byte");
  if (*last < *first) return absl::InvalidArgumentError("Content-Range: last byte before first");
  ContentRange out{*first, *last, std::nullopt};
  absl::string_view total = s.substr(slash + 1);
  if (total != "*") {
    std::optional<uint64_t> t = ParseDecimal(total);
    if (!t) return absl::InvalidArgumentError("Content-Range: bad total length");
    if (*last >= *t) return absl::InvalidArgumentError("Content-Range: range past total length");
    out.total = *t;
  }
  return out;
}

std::optional<absl::Duration> ParseRetryAfter(absl::string_view value, absl::Time now) {
  absl::string_view s = absl::StripAsciiWhitespace(value);
  if (s.empty() || s.size() > 64) return std::nullopt;
  if (std::optional<uint64_t> secs = ParseDecimal(s)) {
    if (*secs > 86400 * 365) return absl::Hours(24 * 365);
    return absl::Seconds(static_cast<int64_t>(*secs));
  }
  // IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT".
  absl::Time t;
  std::string err;
  if (absl::ParseTime("%a, %d %b %Y %H:%M:%S GMT", std::string(s), absl::UTCTimeZone(), &t, &err)) {
    return t > now ? t - now : absl::ZeroDuration();
  }
  return std::nullopt;
}

absl::StatusOr<std::pair<uint64_t, uint64_t>> ParseUploadRange(absl::string_view value) {
  absl::string_view s = absl::StripAsciiWhitespace(value);
  absl::ConsumePrefix(&s, "bytes=");
  size_t dash = s.find('-');
  if (dash == absl::string_view::npos) {
    return absl::InvalidArgumentError("upload Range: expected first-last");
  }
  std::optional<uint64_t> first = ParseDecimal(s.substr(0, dash));
  std::optional<uint64_t> last = ParseDecimal(s.substr(dash + 1));
  if (!first || !last || *last < *first) {
    return absl::InvalidArgumentError("upload Range: bad first or last byte");
  }
  return std::make_pair(*first, *last);
}

absl::StatusOr<UrlParts> ParseHttpUrl(absl::string_view url) {
  if (url.size() > 8192) return absl::InvalidArgumentError("URL: longer than 8192 bytes");
  UrlParts out;
  absl::string_view s = url;
  if (absl::ConsumePrefix(&s, "https://")) {
    out.scheme = "https";
  } else if (absl::ConsumePrefix(&s, "http://")) {
    out.scheme = "http";
  } else {
    return absl::InvalidArgumentError("URL: not an absolute http:// or https:// URL");
  }
  size_t end = s.find_first_of("/?#");
  absl::string_view authority = s.substr(0, end);
  if (authority.empty()) return absl::InvalidArgumentError("URL: no host");
  if (absl::StrContains(authority, '@')) {
    return absl::InvalidArgumentError("URL: user information in URLs is not accepted");
  }
  for (char c : authority) {
    if (!(absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == ':' ||
          c == '[' || c == ']' || c == '_')) {
      return absl::InvalidArgumentError("URL: invalid character in host");
    }
  }
  out.authority = absl::AsciiStrToLower(authority);
  absl::string_view rest = end == absl::string_view::npos ? absl::string_view() : s.substr(end);
  out.path_and_query = absl::StrCat(absl::StartsWith(rest, "/") ? "" : "/", rest);
  return out;
}

std::string UrlEncode(absl::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (char c : s) {
    unsigned char u = static_cast<unsigned char>(c);
    if (absl::ascii_isalnum(u) || c == '-' || c == '.' || c == '_' || c == '~') {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(kHex[u >> 4]);
      out.push_back(kHex[u & 15]);
    }
  }
  return out;
}

}  // namespace dadi::blockstore
