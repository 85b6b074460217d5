#include "blockstore/blob/tar_envelope.h"

#include "gtest/gtest.h"
#include "tests/blockstore/test_util.h"
#include "tests/support/scratch_dir.h"

namespace dadi::blockstore {
namespace {

absl::StatusOr<TarEntry> Parse(const std::string& bytes) {
  return ReadTarEnvelope(*NewMemoryFile(bytes, "blob"));
}

std::string Envelope(uint64_t size) {
  return EncodeTarEnvelopeHead(size) + std::string(size, 'z') + EncodeTarEnvelopeTail(size);
}

TEST(TarEnvelopeTest, RoundTripAtOverlaybdOffset) {
  for (uint64_t size : {0, 1, 511, 512, 513, 68910}) {
    std::string t = Envelope(size);
    EXPECT_EQ(t.size() % 512, 0u);
    auto e = Parse(t);
    ASSERT_TRUE(e.ok()) << e.status();
    EXPECT_EQ(e->name, "overlaybd.commit");
    EXPECT_EQ(e->data_offset, 1536u);
    EXPECT_EQ(e->size, size);
  }
}

TEST(TarEnvelopeTest, ReadsOverlaybdEnvelope) {
  std::string ref = testing::ReadFileOrDie(testing::TestDataPath("overlaybd/l0.commit"));
  auto e = Parse(ref);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->data_offset, 1536u);
  EXPECT_EQ(e->size, 68910u);
}

TEST(TarEnvelopeTest, PlainUstarWithoutPax) {
  std::string t = Envelope(1000);
  std::string plain = t.substr(1024);  // drop the PAX header and its records
  auto e = Parse(plain);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->data_offset, 512u);
  EXPECT_EQ(e->size, 1000u);
}

TEST(TarEnvelopeTest, EveryTruncationOfTheHeadersFails) {
  std::string t = Envelope(100);
  for (size_t len = 0; len < 1536 + 100; ++len) {
    EXPECT_FALSE(Parse(t.substr(0, len)).ok()) << len;
  }
}

TEST(TarEnvelopeTest, CorruptHeadersFailWithClearErrors) {
  const std::string t = Envelope(100);
  // Any byte change in either header breaks its checksum.
  for (size_t pos : {0, 100, 124, 148, 156, 257, 1024, 1124, 1180, 1281}) {
    std::string bad = t;
    bad[pos] ^= 0x01;
    auto e = Parse(bad);
    EXPECT_FALSE(e.ok()) << pos;
    EXPECT_EQ(e.status().code(), absl::StatusCode::kDataLoss);
  }
  // PAX records: a size past the end, a malformed record.
  std::string big = EncodeTarEnvelopeHead(uint64_t{1} << 40) + std::string(100, 'z');
  EXPECT_NE(Parse(big).status().message().find("past the end"), std::string::npos);
  std::string bad = t;
  bad[512] = 'x';  // "14 size=..." becomes "x4 size=..."
  EXPECT_NE(Parse(bad).status().message().find("PAX"), std::string::npos);
}

}  // namespace
}  // namespace dadi::blockstore
