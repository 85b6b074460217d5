#include "snapshotter/remote_labels.h"

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace dadi::snapshotter {

std::string RepositoryOfImageRef(absl::string_view ref) {
  if (ref.empty() || ref.find_first_of(" \t\n") != absl::string_view::npos) return "";
  if (size_t at = ref.find('@'); at != absl::string_view::npos) ref = ref.substr(0, at);
  const size_t slash = ref.rfind('/');
  const size_t colon = ref.rfind(':');
  // A ':' after the last '/' starts the tag; one before it belongs to host:port.
  if (colon != absl::string_view::npos && (slash == absl::string_view::npos || colon > slash)) {
    ref = ref.substr(0, colon);
  }
  if (ref.empty()) return "";
  const size_t first = ref.find('/');
  const absl::string_view head = ref.substr(0, first);
  const bool has_host =
      first != absl::string_view::npos &&
      (head.find_first_of(".:") != absl::string_view::npos || head == "localhost");
  if (has_host) return std::string(ref);
  if (first == absl::string_view::npos) return absl::StrCat("docker.io/library/", ref);
  return absl::StrCat("docker.io/", ref);
}

namespace {

bool IsSha256Digest(absl::string_view d) {
  if (d.size() != 71 || d.substr(0, 7) != "sha256:") return false;
  for (char c : d.substr(7)) {
    if (!absl::ascii_isdigit(c) && !(c >= 'a' && c <= 'f')) return false;
  }
  return true;
}

const std::string* Find(const Labels& labels, const char* key) {
  auto it = labels.find(key);
  return it == labels.end() || it->second.empty() ? nullptr : &it->second;
}

}  // namespace

std::optional<StartupTraceRef> StartupTraceOfLabels(const Labels& labels) {
  const std::string* digest = Find(labels, kLabelStartupTraceDigest);
  const std::string* size = Find(labels, kLabelStartupTraceSize);
  StartupTraceRef ref;
  if (digest == nullptr || size == nullptr || !IsSha256Digest(*digest) ||
      !absl::ascii_isdigit(size->front()) || !absl::SimpleAtoi(*size, &ref.size) || ref.size == 0) {
    return std::nullopt;
  }
  ref.digest = *digest;
  return ref;
}

absl::StatusOr<std::optional<RemoteLayerRequest>> ParseRemoteLayerLabels(const Labels& labels) {
  const std::string* target = Find(labels, kLabelSnapshotRef);
  const std::string* digest = Find(labels, kLabelBlobDigest);
  const std::string* size = Find(labels, kLabelBlobSize);
  if (target == nullptr || digest == nullptr || size == nullptr) return std::nullopt;
  RemoteLayerRequest req;
  req.target = *target;
  if (!IsSha256Digest(*digest)) {
    return absl::InvalidArgumentError(
        absl::StrCat("label ", kLabelBlobDigest, " \"", *digest, "\" is not sha256:<64 hex>"));
  }
  req.layer.digest = *digest;
  if (!absl::SimpleAtoi(*size, &req.layer.size) || req.layer.size == 0 ||
      !absl::ascii_isdigit(size->front())) {
    return absl::InvalidArgumentError(
        absl::StrCat("label ", kLabelBlobSize, " \"", *size, "\" is not a positive decimal"));
  }
  // Where to fetch from: the image the layer was pulled as, else what dadi convert recorded.
  for (const char* key : {kLabelCriImageRef, kLabelImageRef}) {
    if (const std::string* ref = Find(labels, key)) {
      req.layer.repository = RepositoryOfImageRef(*ref);
      if (!req.layer.repository.empty()) return req;
    }
  }
  if (const std::string* repo = Find(labels, kLabelDadiRepository)) {
    req.layer.repository = RepositoryOfImageRef(*repo);
  }
  return req;
}

}  // namespace dadi::snapshotter
