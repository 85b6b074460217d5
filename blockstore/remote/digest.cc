#include "blockstore/remote/digest.h"

#include <openssl/evp.h>

#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "blockstore/file/file.h"

namespace dadi::blockstore {
namespace {

bool IsLowerHex(absl::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace

bool IsValidDigest(absl::string_view digest) {
  if (absl::StartsWith(digest, "sha256:")) {
    absl::string_view hex = digest.substr(7);
    return hex.size() == 64 && IsLowerHex(hex);
  }
  if (absl::StartsWith(digest, "sha512:")) {
    absl::string_view hex = digest.substr(7);
    return hex.size() == 128 && IsLowerHex(hex);
  }
  return false;
}

absl::Status CheckDigest(absl::string_view digest, absl::string_view what) {
  if (IsValidDigest(digest)) return absl::OkStatus();
  std::string shown(digest.substr(0, 80));
  return absl::InvalidArgumentError(
      absl::StrCat(what, ": invalid digest \"", shown, "\" (want sha256:<64 hex digits>)"));
}

struct Sha256::Ctx {
  EVP_MD_CTX* md = nullptr;
  ~Ctx() { EVP_MD_CTX_free(md); }
};

Sha256::Sha256() : ctx_(std::make_unique<Ctx>()) {
  ctx_->md = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx_->md, EVP_sha256(), nullptr);
}

Sha256::~Sha256() = default;

void Sha256::Update(absl::string_view data) {
  EVP_DigestUpdate(ctx_->md, data.data(), data.size());
}

std::string Sha256::Finish() {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx_->md, out, &len);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string result = "sha256:";
  for (unsigned int i = 0; i < len; ++i) {
    result.push_back(kHex[out[i] >> 4]);
    result.push_back(kHex[out[i] & 15]);
  }
  return result;
}

std::string Sha256Digest(absl::string_view data) {
  Sha256 h;
  h.Update(data);
  return h.Finish();
}

absl::StatusOr<std::string> Sha256DigestOfFile(const RandomAccessFile& file) {
  Sha256 h;
  std::vector<char> buf(4 << 20);
  uint64_t off = 0;
  while (off < file.Size()) {
    absl::StatusOr<size_t> got = file.Pread(off, buf.size(), buf.data());
    if (!got.ok()) return got.status();
    if (*got == 0) {
      return absl::DataLossError(absl::StrCat(file.Name(), ": short read at offset ", off,
                                              " while hashing (size ", file.Size(), ")"));
    }
    h.Update(absl::string_view(buf.data(), *got));
    off += *got;
  }
  return h.Finish();
}

}  // namespace dadi::blockstore
