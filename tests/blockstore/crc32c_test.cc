#include "blockstore/zfile/crc32c.h"

#include <random>
#include <string>

#include "gtest/gtest.h"
#include "tests/blockstore/test_util.h"

namespace dadi::blockstore {
namespace {

TEST(Crc32cTest, StandardCheckValue) {
  // The standard CRC-32C check value uses pre/post inversion around the raw register.
  const std::string s = "123456789";
  EXPECT_EQ(crc32c::Extend(0xFFFFFFFFu, s.data(), s.size()) ^ 0xFFFFFFFFu, 0xE3069283u);
}

TEST(Crc32cTest, RawRegisterWithoutInversion) {
  // overlaybd's convention: no inversion; the CRC of nothing is the seed itself.
  EXPECT_EQ(crc32c::Extend(crc32c::kBlockSeed, "", 0), crc32c::kBlockSeed);
  EXPECT_EQ(crc32c::Value("", 0), 0u);
  EXPECT_EQ(crc32c::Value(std::string(32, '\0').data(), 32), 0u);
}

TEST(Crc32cTest, HardwareMatchesPortableAtEveryLengthAndAlignment) {
  std::mt19937_64 rng(1);
  std::string data = testing::RandomBytes(4096 + 64, rng);
  for (size_t start = 0; start < 9; ++start) {
    for (size_t len : {0, 1, 7, 8, 9, 15, 16, 63, 64, 65, 1000, 4096}) {
      uint32_t seed = static_cast<uint32_t>(rng());
      EXPECT_EQ(crc32c::Extend(seed, data.data() + start, len),
                crc32c::internal::ExtendPortableForTest(seed, data.data() + start, len))
          << start << " " << len;
    }
  }
}

TEST(Crc32cTest, ExtendComposes) {
  std::mt19937_64 rng(2);
  std::string data = testing::RandomBytes(1000, rng);
  uint32_t whole = crc32c::Extend(crc32c::kBlockSeed, data.data(), data.size());
  uint32_t part = crc32c::Extend(crc32c::kBlockSeed, data.data(), 333);
  EXPECT_EQ(crc32c::Extend(part, data.data() + 333, data.size() - 333), whole);
}

}  // namespace
}  // namespace dadi::blockstore
