// Image references and digests from untrusted strings.
#include <cstddef>
#include <cstdint>
#include <string>

#include "blockstore/remote/digest.h"
#include "blockstore/remote/reference.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string in(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<dadi::blockstore::Reference> r = dadi::blockstore::ParseReference(in);
  if (r.ok()) {
    // A parsed reference prints to a string that parses to the same reference.
    absl::StatusOr<dadi::blockstore::Reference> again =
        dadi::blockstore::ParseReference(r->String());
    if (!again.ok() || again->String() != r->String()) __builtin_trap();
  }
  (void)dadi::blockstore::IsValidDigest(in);
  return 0;
}
