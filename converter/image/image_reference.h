// Image references with skopeo-style transports, the SRC and DST of `dadi convert`:
//   docker://host/repo:tag       a registry (blockstore::Reference rules)
//   oci:DIR[:TAG]                an OCI image layout directory
//   oci-archive:FILE[:TAG]       an OCI image layout in a tar file
//   docker-archive:FILE[:REF]    a `docker save` tarball (manifest.json + layer tars)
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "blockstore/remote/reference.h"

namespace dadi::converter::image {

enum class Transport { kDocker, kOciLayout, kOciArchive, kDockerArchive };

struct ImageReference {
  Transport transport = Transport::kDocker;
  blockstore::Reference registry;  // kDocker only
  std::string path;                // the directory or file of the local transports
  std::string tag;                 // oci/oci-archive tag, docker-archive ref; may be empty
  // The text it was parsed from, for messages.
  std::string String() const;
};

// Fails with INVALID_ARGUMENT for an unknown transport, an empty path or a bad registry
// reference.
absl::StatusOr<ImageReference> ParseImageReference(absl::string_view text);

}  // namespace dadi::converter::image
