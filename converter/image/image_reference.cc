#include "converter/image/image_reference.h"

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace dadi::converter::image {

std::string ImageReference::String() const {
  switch (transport) {
    case Transport::kDocker:
      return absl::StrCat("docker://", registry.String());
    case Transport::kOciLayout:
      return absl::StrCat("oci:", path, tag.empty() ? "" : ":", tag);
    case Transport::kOciArchive:
      return absl::StrCat("oci-archive:", path, tag.empty() ? "" : ":", tag);
    case Transport::kDockerArchive:
      return absl::StrCat("docker-archive:", path, tag.empty() ? "" : ":", tag);
  }
  return "";
}

namespace {

// "PATH[:TAG]": the tag is what follows the last ':' when it contains no '/' (a path such as
// "dir:with:colons/x" keeps its colons only if the last part holds a '/').
void SplitPathTag(absl::string_view rest, std::string* path, std::string* tag) {
  size_t colon = rest.rfind(':');
  if (colon != absl::string_view::npos &&
      rest.substr(colon + 1).find('/') == absl::string_view::npos) {
    *path = std::string(rest.substr(0, colon));
    *tag = std::string(rest.substr(colon + 1));
  } else {
    *path = std::string(rest);
    tag->clear();
  }
}

}  // namespace

absl::StatusOr<ImageReference> ParseImageReference(absl::string_view text) {
  ImageReference ref;
  size_t colon = text.find(':');
  if (colon == absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("image reference \"", text,
                     "\": no transport (use docker://, oci:, oci-archive: or docker-archive:)"));
  }
  absl::string_view transport = text.substr(0, colon);
  absl::string_view rest = text.substr(colon + 1);
  if (transport == "docker") {
    if (!absl::StartsWith(rest, "//")) {
      return absl::InvalidArgumentError(
          absl::StrCat("image reference \"", text, "\": docker transport needs docker://"));
    }
    auto r = blockstore::ParseReference(rest.substr(2));
    if (!r.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("image reference \"", text, "\": ", r.status().message()));
    }
    ref.transport = Transport::kDocker;
    ref.registry = *std::move(r);
    return ref;
  }
  if (transport == "oci") {
    ref.transport = Transport::kOciLayout;
  } else if (transport == "oci-archive") {
    ref.transport = Transport::kOciArchive;
  } else if (transport == "docker-archive") {
    ref.transport = Transport::kDockerArchive;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("image reference \"", text, "\": unknown transport \"", transport,
                     "\" (use docker://, oci:, oci-archive: or docker-archive:)"));
  }
  if (ref.transport == Transport::kDockerArchive) {
    // docker-archive:FILE[:REF] where REF may itself hold a ':' (repo:tag): split at the first
    // ':' after the file name.
    size_t c = rest.find(':');
    ref.path = std::string(rest.substr(0, c));
    if (c != absl::string_view::npos) ref.tag = std::string(rest.substr(c + 1));
  } else {
    SplitPathTag(rest, &ref.path, &ref.tag);
  }
  if (ref.path.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("image reference \"", text, "\": empty path"));
  }
  return ref;
}

}  // namespace dadi::converter::image
