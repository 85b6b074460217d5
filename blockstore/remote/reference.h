// Image references: `[host[:port]/]repo/path[:tag][@digest]`, normalised the way docker and
// containerd do (Docker Hub when no host is named, `library/` for official images).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dadi::blockstore {

// The host that serves Docker Hub's registry API; "docker.io" and "index.docker.io" map here.
inline constexpr absl::string_view kDockerHubRegistry = "registry-1.docker.io";

struct Reference {
  std::string registry;    // host[:port], lowercase; kDockerHubRegistry for Docker Hub
  std::string repository;  // path components, e.g. "library/ubuntu"
  std::string tag;         // empty when only a digest was given
  std::string digest;      // "sha256:..." or empty

  // What the manifest endpoint takes: the digest when set, else the tag.
  std::string ManifestRef() const { return digest.empty() ? tag : digest; }
  // Canonical string: registry/repository[:tag][@digest].
  std::string String() const;
};

// Parses and normalises an image reference. When neither tag nor digest is given the tag is
// "latest". Fails with INVALID_ARGUMENT naming the bad part.
absl::StatusOr<Reference> ParseReference(absl::string_view ref);

// Maps registry host aliases to the host to contact ("docker.io" -> registry-1.docker.io).
std::string NormalizeRegistryHost(absl::string_view host);

// True for a valid repository path (lowercase components separated by '/').
bool IsValidRepository(absl::string_view repo);

// True for a valid tag ([A-Za-z0-9_][A-Za-z0-9_.-]{0,127}).
bool IsValidTag(absl::string_view tag);

}  // namespace dadi::blockstore
