// OCI and Docker v2 image manifests and indexes (manifest lists): typed, bounds-checked parsing
// of registry JSON with nlohmann-json, serialisation for pushes, platform selection.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dadi::blockstore {

inline constexpr absl::string_view kOciManifestMediaType =
    "application/vnd.oci.image.manifest.v1+json";
inline constexpr absl::string_view kOciIndexMediaType = "application/vnd.oci.image.index.v1+json";
inline constexpr absl::string_view kDockerManifestMediaType =
    "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr absl::string_view kDockerManifestListMediaType =
    "application/vnd.docker.distribution.manifest.list.v2+json";
inline constexpr absl::string_view kOciConfigMediaType = "application/vnd.oci.image.config.v1+json";
inline constexpr absl::string_view kDockerConfigMediaType =
    "application/vnd.docker.container.image.v1+json";
inline constexpr absl::string_view kOciLayerMediaType = "application/vnd.oci.image.layer.v1.tar";
inline constexpr absl::string_view kOciLayerGzipMediaType =
    "application/vnd.oci.image.layer.v1.tar+gzip";

// Manifests larger than this are refused (distribution's own limit is 4 MiB).
inline constexpr size_t kMaxManifestBytes = 4 << 20;

// The Accept header value for manifest GET/HEAD: all four manifest and index types.
std::string ManifestAcceptHeader();

bool IsIndexMediaType(absl::string_view media_type);
bool IsManifestMediaType(absl::string_view media_type);

struct Platform {
  std::string architecture;  // "amd64", "arm64", ...
  std::string os;            // "linux"
  std::string variant;       // "v8", optional
  std::string os_version;    // optional
  std::vector<std::string> os_features;
};

// The platform this binary runs on (os "linux", GOARCH-style architecture).
Platform HostPlatform();

struct Descriptor {
  std::string media_type;
  std::string digest;
  int64_t size = 0;
  std::vector<std::string> urls;
  std::map<std::string, std::string> annotations;
  std::optional<Platform> platform;
  std::string artifact_type;
};

struct ImageManifest {
  int schema_version = 2;
  std::string media_type;  // may be empty in OCI manifests
  std::string artifact_type;
  Descriptor config;
  std::vector<Descriptor> layers;
  std::optional<Descriptor> subject;
  std::map<std::string, std::string> annotations;
};

struct ImageIndex {
  int schema_version = 2;
  std::string media_type;
  std::vector<Descriptor> manifests;
  std::map<std::string, std::string> annotations;
};

// The media type of a manifest document: the response's Content-Type when it is one of the
// four known types, else the document's "mediaType" field, else inferred ("manifests" ->
// OCI index, "config"/"layers" -> OCI manifest). Fails with INVALID_ARGUMENT otherwise.
absl::StatusOr<std::string> DetectManifestMediaType(absl::string_view json,
                                                    absl::string_view content_type);

// Parse a manifest / an index. Every field is type-checked; digests must be valid, sizes
// non-negative; schemaVersion must be 2.
absl::StatusOr<ImageManifest> ParseImageManifest(absl::string_view json);
absl::StatusOr<ImageIndex> ParseImageIndex(absl::string_view json);

// Canonical JSON (compact) for pushing. Field order follows the spec.
std::string SerializeImageManifest(const ImageManifest& manifest);
std::string SerializeImageIndex(const ImageIndex& index);

// The index entry for `want` (os and architecture must match; variant when both name one).
// NOT_FOUND listing the available platforms when none matches.
absl::StatusOr<Descriptor> SelectPlatform(const ImageIndex& index, const Platform& want);

// A registry error body `{"errors": [{"code", "message"}]}` summarised as "CODE: message; ..."
// (at most 3 errors, each message cut to 200 bytes); empty when the body is not one.
std::string DescribeRegistryErrors(absl::string_view body);

}  // namespace dadi::blockstore
