// Registry JSON: manifests, indexes, error bodies.
#include <cstddef>
#include <cstdint>
#include <string>

#include "blockstore/remote/manifest.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string in(reinterpret_cast<const char*>(data), size);
  using namespace dadi::blockstore;
  (void)DetectManifestMediaType(in, "");
  absl::StatusOr<ImageManifest> m = ParseImageManifest(in);
  if (m.ok()) {
    // What we serialise we must parse back.
    if (!ParseImageManifest(SerializeImageManifest(*m)).ok()) __builtin_trap();
  }
  absl::StatusOr<ImageIndex> idx = ParseImageIndex(in);
  if (idx.ok()) {
    if (!ParseImageIndex(SerializeImageIndex(*idx)).ok()) __builtin_trap();
    (void)SelectPlatform(*idx, HostPlatform());
  }
  (void)DescribeRegistryErrors(in);
  return 0;
}
