#include "blockstore/remote/http_parse.h"

#include <algorithm>

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

// A quoted-string (RFC 9110 5.6.4) at the front of `s`, its opening quote already consumed:
// unescapes it into `value` and consumes it with the closing quote. False when `s` ends first.
bool ConsumeQuotedRest(absl::string_view& s, std::string* value) {
  while (!s.empty()) {
    char c = s.front();
    s.remove_prefix(1);
    if (c == '\\') {
      if (s.empty()) return false;
      value->push_back(s.front());
      s.remove_prefix(1);
    } else if (c == '"') {
      return true;
    } else {
      value->push_back(c);
    }
  }
  return false;
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
        if (!ConsumeQuotedRest(s, &value)) {
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

absl::StatusOr<std::string> ParseMultipartBoundary(absl::string_view content_type) {
  if (content_type.size() > kMaxHeaderValue) {
    return absl::InvalidArgumentError(absl::StrCat("Content-Type: header is ", content_type.size(),
                                                   " bytes (max ", kMaxHeaderValue, ")"));
  }
  absl::string_view s = content_type;
  SkipSpace(s);
  absl::string_view type = TakeToken(s);
  if (!absl::ConsumePrefix(&s, "/")) {
    return absl::InvalidArgumentError("Content-Type: expected type/subtype");
  }
  absl::string_view subtype = TakeToken(s);
  if (!absl::EqualsIgnoreCase(type, "multipart") ||
      !absl::EqualsIgnoreCase(subtype, "byteranges")) {
    return absl::InvalidArgumentError(absl::StrCat("Content-Type: \"", content_type.substr(0, 100),
                                                   "\" is not multipart/byteranges"));
  }
  std::optional<std::string> boundary;
  while (true) {
    SkipSpace(s);
    if (s.empty()) break;
    if (!absl::ConsumePrefix(&s, ";")) {
      return absl::InvalidArgumentError("Content-Type: expected ';' before a parameter");
    }
    SkipSpace(s);
    if (s.empty()) break;  // a trailing ';'
    absl::string_view name = TakeToken(s);
    SkipSpace(s);
    if (name.empty() || !absl::ConsumePrefix(&s, "=")) {
      return absl::InvalidArgumentError("Content-Type: expected name=value parameter");
    }
    SkipSpace(s);
    std::string value;
    if (absl::ConsumePrefix(&s, "\"")) {
      if (!ConsumeQuotedRest(s, &value)) {
        return absl::InvalidArgumentError(
            absl::StrCat("Content-Type: unterminated quoted value of parameter \"", name, "\""));
      }
    } else {
      value = std::string(TakeToken(s));
      if (value.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("Content-Type: parameter \"", name, "\" has no value"));
      }
    }
    if (absl::EqualsIgnoreCase(name, "boundary")) {
      if (boundary) return absl::InvalidArgumentError("Content-Type: two boundary parameters");
      boundary = std::move(value);
    }
  }
  if (!boundary) return absl::InvalidArgumentError("Content-Type: no boundary parameter");
  if (boundary->empty() || boundary->size() > 70) {
    return absl::InvalidArgumentError(
        absl::StrCat("Content-Type: boundary is ", boundary->size(), " characters (1..70)"));
  }
  for (char c : *boundary) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return absl::InvalidArgumentError("Content-Type: control character in boundary");
    }
  }
  if (boundary->back() == ' ') {
    return absl::InvalidArgumentError("Content-Type: boundary ends with a space");
  }
  return *boundary;
}

absl::StatusOr<std::vector<BytesPart>> ParseMultipartByteranges(absl::string_view body,
                                                                absl::string_view boundary) {
  if (boundary.empty() || boundary.size() > 70) {
    return absl::InvalidArgumentError(
        absl::StrCat("multipart: boundary is ", boundary.size(), " characters (1..70)"));
  }
  const std::string delimiter = absl::StrCat("--", boundary);
  const std::string next_delimiter = absl::StrCat("\r\n", delimiter);
  // The first delimiter opens the body or follows a preamble on a line of its own.
  size_t pos = 0;
  if (!absl::StartsWith(body, delimiter)) {
    pos = body.find(next_delimiter);
    if (pos == absl::string_view::npos) {
      return absl::InvalidArgumentError("multipart: no delimiter line in the body");
    }
    pos += 2;
  }
  std::vector<BytesPart> parts;
  while (true) {
    // At a delimiter: "--boundary" then "--" (close) or transport padding and CRLF.
    pos += delimiter.size();
    absl::string_view rest = body.substr(pos);
    if (absl::StartsWith(rest, "--")) break;  // the close delimiter; the epilogue is ignored
    if (parts.size() == kMaxMultipartParts) {
      return absl::InvalidArgumentError(
          absl::StrCat("multipart: more than ", kMaxMultipartParts, " parts"));
    }
    size_t line_end = rest.substr(0, kMaxMultipartPartHeaderBytes).find("\r\n");
    if (line_end == absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("multipart: delimiter line of part ", parts.size() + 1, " does not end"));
    }
    for (char c : rest.substr(0, line_end)) {
      if (c != ' ' && c != '\t') {
        return absl::InvalidArgumentError(absl::StrCat(
            "multipart: unexpected character after the delimiter of part ", parts.size() + 1));
      }
    }
    // Part headers up to an empty line, within kMaxMultipartPartHeaderBytes.
    size_t header_bytes = delimiter.size() + line_end + 2;
    pos += line_end + 2;
    std::optional<ContentRange> range;
    while (true) {
      rest = body.substr(pos);
      size_t budget =
          kMaxMultipartPartHeaderBytes - std::min(header_bytes, kMaxMultipartPartHeaderBytes);
      line_end = rest.substr(0, budget).find("\r\n");
      if (line_end == absl::string_view::npos) {
        return absl::InvalidArgumentError(
            absl::StrCat("multipart: headers of part ", parts.size() + 1,
                         rest.size() < budget
                             ? " are cut short"
                             : absl::StrCat(" exceed ", kMaxMultipartPartHeaderBytes, " bytes")));
      }
      header_bytes += line_end + 2;
      pos += line_end + 2;
      if (line_end == 0) break;
      std::optional<std::pair<std::string, std::string>> h =
          ParseHeaderLine(rest.substr(0, line_end));
      if (!h) {
        return absl::InvalidArgumentError(
            absl::StrCat("multipart: malformed header line in part ", parts.size() + 1));
      }
      if (h->first != "content-range") continue;
      if (range) {
        return absl::InvalidArgumentError(
            absl::StrCat("multipart: part ", parts.size() + 1, " has two Content-Range headers"));
      }
      absl::StatusOr<ContentRange> cr = ParseContentRange(h->second);
      if (!cr.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("multipart: part ", parts.size() + 1, ": ", cr.status().message()));
      }
      range = *cr;
    }
    if (!range) {
      return absl::InvalidArgumentError(
          absl::StrCat("multipart: part ", parts.size() + 1, " has no Content-Range"));
    }
    // The part's bytes, exactly as many as its Content-Range says, then the next delimiter.
    rest = body.substr(pos);
    const uint64_t span = range->last - range->first;  // length - 1, cannot overflow
    if (span >= rest.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("multipart: part ", parts.size() + 1, " (bytes ", range->first, "-",
                       range->last, ") is cut short: ", rest.size(), " bytes left"));
    }
    const size_t length = static_cast<size_t>(span) + 1;
    if (!absl::StartsWith(rest.substr(length), next_delimiter)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "multipart: part ", parts.size() + 1, " (bytes ", range->first, "-", range->last,
          ") is not followed by a delimiter: wrong length or no close "
          "delimiter"));
    }
    parts.push_back(BytesPart{range->first, range->last, rest.substr(0, length)});
    pos += length + 2;
  }
  if (parts.empty()) return absl::InvalidArgumentError("multipart: no parts");
  return parts;
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
