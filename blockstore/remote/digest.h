// Content digests of OCI blobs ("sha256:<64 lowercase hex>"), computed with OpenSSL's EVP.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dadi::blockstore {

class RandomAccessFile;

// True for "sha256:" followed by exactly 64 lowercase hex digits (the only algorithm dadi
// verifies), or "sha512:" followed by 128.
bool IsValidDigest(absl::string_view digest);

// Fails with INVALID_ARGUMENT naming `what` when `digest` is not a valid digest.
absl::Status CheckDigest(absl::string_view digest, absl::string_view what);

// Incremental sha256. Not thread-safe.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Update(absl::string_view data);
  // "sha256:<hex>". The object cannot be updated afterwards.
  std::string Finish();

 private:
  struct Ctx;
  std::unique_ptr<Ctx> ctx_;
};

// "sha256:<hex>" of `data`.
std::string Sha256Digest(absl::string_view data);

// sha256 of a whole file, read in large chunks.
absl::StatusOr<std::string> Sha256DigestOfFile(const RandomAccessFile& file);

}  // namespace dadi::blockstore
