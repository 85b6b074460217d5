#include "tests/blockstore/test_util.h"

#include <openssl/evp.h>

#include <fstream>
#include <sstream>

#include "absl/strings/escaping.h"
#include "gtest/gtest.h"

namespace dadi::testing {

std::string RandomBytes(size_t n, std::mt19937_64& rng) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; i += 8) {
    uint64_t v = rng();
    std::memcpy(s.data() + i, &v, std::min<size_t>(8, n - i));
  }
  return s;
}

std::string MixedData(size_t n, uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::string out;
  out.reserve(n);
  static const char* kWords[] = {"overlaybd ", "layer ", "block ", "zfile ", "lsmt\n", "dadi "};
  while (out.size() < n) {
    size_t run = 1 + rng() % 9000;
    switch (rng() % 3) {
      case 0:
        out += RandomBytes(run, rng);
        break;
      case 1:
        while (run > 0) {
          const char* w = kWords[rng() % 6];
          out += w;
          run -= std::min(run, strlen(w));
        }
        break;
      default:
        out.append(run, '\0');
    }
  }
  out.resize(n);
  return out;
}

std::string ReadFileOrDie(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

namespace {
struct MdCtx {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  ~MdCtx() { EVP_MD_CTX_free(ctx); }
};
std::string Final(EVP_MD_CTX* ctx) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, md, &len);
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(md), len));
}
}  // namespace

std::string Sha256Hex(absl::string_view data) {
  MdCtx c;
  EVP_DigestInit_ex(c.ctx, EVP_sha256(), nullptr);
  EVP_DigestUpdate(c.ctx, data.data(), data.size());
  return Final(c.ctx);
}

std::string Sha256OfFile(const blockstore::RandomAccessFile& file) {
  MdCtx c;
  EVP_DigestInit_ex(c.ctx, EVP_sha256(), nullptr);
  std::string buf(4 << 20, '\0');
  for (uint64_t off = 0; off < file.Size();) {
    absl::StatusOr<size_t> got = file.Pread(off, buf.size(), buf.data());
    EXPECT_TRUE(got.ok()) << got.status();
    if (!got.ok() || *got == 0) return "read error";
    EVP_DigestUpdate(c.ctx, buf.data(), *got);
    off += *got;
  }
  return Final(c.ctx);
}

}  // namespace dadi::testing
