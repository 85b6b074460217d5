// Credentials and tokens: docker config.json, token responses, base64, dadi's registry config.
#include <cstddef>
#include <cstdint>
#include <string>

#include "blockstore/remote/auth.h"
#include "blockstore/remote/registry_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string in(reinterpret_cast<const char*>(data), size);
  using namespace dadi::blockstore;
  (void)ParseDockerConfig(in);
  (void)ParseTokenResponse(in);
  absl::StatusOr<std::string> decoded = Base64Decode(in);
  if (decoded.ok() && *Base64Decode(Base64Encode(*decoded)) != *decoded) __builtin_trap();
  // "docker_config" names a file to read; keep the fuzzer off the filesystem.
  if (in.find("docker_config") == std::string::npos) (void)ParseRegistryConfig(in);
  return 0;
}
