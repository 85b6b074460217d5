#include "blockstore/remote/reference.h"

#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "blockstore/remote/digest.h"

namespace dadi::blockstore {
namespace {

constexpr size_t kMaxReferenceLength = 4096;

bool IsLowerAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

// One path component: [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
bool IsValidComponent(absl::string_view c) {
  if (c.empty() || !IsLowerAlnum(c.front()) || !IsLowerAlnum(c.back())) return false;
  size_t i = 0;
  while (i < c.size()) {
    if (IsLowerAlnum(c[i])) {
      ++i;
      continue;
    }
    // A separator run: '.', '_', '__' or one or more '-'.
    size_t j = i;
    if (c[i] == '.') {
      j = i + 1;
    } else if (c[i] == '_') {
      j = i + 1;
      if (j < c.size() && c[j] == '_') ++j;
    } else if (c[i] == '-') {
      while (j < c.size() && c[j] == '-') ++j;
    } else {
      return false;
    }
    if (j >= c.size() || !IsLowerAlnum(c[j])) return false;
    i = j;
  }
  return true;
}

bool IsValidHost(absl::string_view host) {
  if (host.empty() || host.size() > 255) return false;
  absl::string_view name = host;
  if (name.front() == '[') {  // IPv6 literal [::1]:5000
    size_t close = name.find(']');
    if (close == absl::string_view::npos) return false;
    for (char c : name.substr(1, close - 1)) {
      if (!(absl::ascii_isxdigit(static_cast<unsigned char>(c)) || c == ':' || c == '.'))
        return false;
    }
    name = name.substr(close + 1);
    if (name.empty()) return true;
    if (name.front() != ':') return false;
    absl::string_view port = name.substr(1);
    if (port.empty() || port.size() > 5) return false;
    for (char c : port) {
      if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return false;
    }
    return true;
  }
  size_t colon = name.find(':');
  if (colon != absl::string_view::npos) {
    absl::string_view port = name.substr(colon + 1);
    if (port.empty() || port.size() > 5) return false;
    for (char c : port) {
      if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return false;
    }
    name = name.substr(0, colon);
  }
  if (name.empty()) return false;
  for (char c : name) {
    if (!(absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.')) return false;
  }
  return name.front() != '-' && name.front() != '.';
}

}  // namespace

bool IsValidRepository(absl::string_view repo) {
  if (repo.empty() || repo.size() > 255) return false;
  for (absl::string_view c : absl::StrSplit(repo, '/')) {
    if (!IsValidComponent(c)) return false;
  }
  return true;
}

bool IsValidTag(absl::string_view tag) {
  if (tag.empty() || tag.size() > 128) return false;
  for (size_t i = 0; i < tag.size(); ++i) {
    char c = tag[i];
    bool word = absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_';
    if (i == 0 ? !word : !(word || c == '.' || c == '-')) return false;
  }
  return true;
}

std::string NormalizeRegistryHost(absl::string_view host) {
  std::string h = absl::AsciiStrToLower(host);
  if (h == "docker.io" || h == "index.docker.io") return std::string(kDockerHubRegistry);
  return h;
}

std::string Reference::String() const {
  std::string s = absl::StrCat(registry, "/", repository);
  if (!tag.empty()) absl::StrAppend(&s, ":", tag);
  if (!digest.empty()) absl::StrAppend(&s, "@", digest);
  return s;
}

absl::StatusOr<Reference> ParseReference(absl::string_view ref) {
  if (ref.empty()) return absl::InvalidArgumentError("image reference is empty");
  if (ref.size() > kMaxReferenceLength) {
    return absl::InvalidArgumentError(absl::StrCat("image reference is ", ref.size(),
                                                   " bytes long (max ", kMaxReferenceLength, ")"));
  }
  std::string shown(ref.substr(0, 200));
  Reference out;
  absl::string_view rest = ref;
  size_t at = rest.find('@');
  if (at != absl::string_view::npos) {
    out.digest = std::string(rest.substr(at + 1));
    rest = rest.substr(0, at);
    if (!IsValidDigest(out.digest)) {
      return absl::InvalidArgumentError(
          absl::StrCat("image reference \"", shown, "\": invalid digest after '@'"));
    }
  }
  // The host is the first component when it looks like one (a '.', a ':' or "localhost").
  size_t slash = rest.find('/');
  absl::string_view host;
  if (slash != absl::string_view::npos) {
    absl::string_view first = rest.substr(0, slash);
    if (absl::StrContains(first, '.') || absl::StrContains(first, ':') || first == "localhost" ||
        (!first.empty() && first.front() == '[')) {
      host = first;
      rest = rest.substr(slash + 1);
    }
  }
  // A tag is after the last ':' that follows the last '/'.
  size_t last_slash = rest.rfind('/');
  size_t colon = rest.rfind(':');
  if (colon != absl::string_view::npos &&
      (last_slash == absl::string_view::npos || colon > last_slash)) {
    out.tag = std::string(rest.substr(colon + 1));
    rest = rest.substr(0, colon);
    if (!IsValidTag(out.tag)) {
      return absl::InvalidArgumentError(
          absl::StrCat("image reference \"", shown, "\": invalid tag"));
    }
  }
  if (host.empty()) {
    out.registry = std::string(kDockerHubRegistry);
  } else {
    if (!IsValidHost(host)) {
      return absl::InvalidArgumentError(
          absl::StrCat("image reference \"", shown, "\": invalid registry host"));
    }
    out.registry = NormalizeRegistryHost(host);
  }
  if (!IsValidRepository(rest)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "image reference \"", shown,
        "\": invalid repository (lowercase letters, digits and separators . _ __ - between them)"));
  }
  out.repository = std::string(rest);
  if (out.registry == kDockerHubRegistry && !absl::StrContains(out.repository, '/')) {
    out.repository = absl::StrCat("library/", out.repository);
    if (!IsValidRepository(out.repository)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "image reference \"", shown, "\": repository too long with the library/ prefix"));
    }
  }
  if (out.tag.empty() && out.digest.empty()) out.tag = "latest";
  return out;
}

}  // namespace dadi::blockstore
