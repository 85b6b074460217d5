#include "blockstore/lsmt/lsmt_format.h"

#include "gtest/gtest.h"

namespace dadi::blockstore {
namespace {

TEST(LsmtHeaderTest, RoundTrip) {
  LsmtHeader h;
  h.flags = LsmtHeader::kFlagTypeData | LsmtHeader::kFlagSealed;
  h.index_offset = 123 * 512;
  h.index_size = 77;
  h.virtual_size = uint64_t{64} << 30;
  h.uuid = "11111111-1111-1111-1111-111111111111";
  h.parent_uuid = "22222222-2222-2222-2222-222222222222";
  h.user_tag = "made by dadi";
  std::string enc;
  h.EncodeTo(&enc);
  ASSERT_EQ(enc.size(), LsmtHeader::kEncodedLength);
  EXPECT_EQ(enc.substr(0, 4), "LSMT");
  EXPECT_EQ(static_cast<uint8_t>(enc[24]), 390 % 256);
  LsmtHeader d;
  ASSERT_TRUE(d.DecodeFrom(enc, "t").ok());
  EXPECT_EQ(d.flags, h.flags);
  EXPECT_EQ(d.index_offset, h.index_offset);
  EXPECT_EQ(d.index_size, h.index_size);
  EXPECT_EQ(d.virtual_size, h.virtual_size);
  EXPECT_EQ(d.uuid, h.uuid);
  EXPECT_EQ(d.parent_uuid, h.parent_uuid);
  EXPECT_EQ(d.user_tag, h.user_tag);
}

TEST(LsmtHeaderTest, RejectsBadMagicSizeVersionAndUnterminatedStrings) {
  LsmtHeader h;
  std::string enc;
  h.EncodeTo(&enc);
  LsmtHeader d;
  EXPECT_FALSE(d.DecodeFrom(enc.substr(0, 4095), "t").ok());
  for (size_t pos : {0, 5, 8, 23, 24, 25, 132}) {
    std::string bad = enc;
    bad[pos] ^= 0x40;
    absl::Status s = d.DecodeFrom(bad, "t");
    EXPECT_FALSE(s.ok()) << pos;
  }
  std::string bad = enc;
  std::fill(bad.begin() + 56, bad.begin() + 93, 'a');  // uuid without NUL
  absl::Status s = d.DecodeFrom(bad, "t");
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("uuid"), std::string::npos);
}

TEST(SegmentMappingTest, BitLayoutMatchesOverlaybd) {
  SegmentMapping m;
  m.offset = SegmentMapping::kMaxOffset - 1;
  m.length = SegmentMapping::kMaxLength;
  m.moffset = SegmentMapping::kMaxMoffset;
  m.zeroed = true;
  char buf[16];
  m.EncodeTo(buf);
  SegmentMapping d = SegmentMapping::DecodeFrom(buf);
  EXPECT_EQ(d, m);
  SegmentMapping small;
  small.offset = 1;
  small.length = 2;
  small.moffset = 3;
  small.EncodeTo(buf);
  // offset in bits 0-49, length in 50-63, moffset in 64-118, zeroed bit 119.
  EXPECT_EQ(static_cast<uint8_t>(buf[0]), 1);
  EXPECT_EQ(static_cast<uint8_t>(buf[6]), 2 << 2);
  EXPECT_EQ(static_cast<uint8_t>(buf[8]), 3);
  EXPECT_EQ(static_cast<uint8_t>(buf[14]), 0);
}

TEST(SegmentMappingTest, LongMappingsSplitOnEncode) {
  SegmentMapping m;
  m.offset = 10;
  m.length = 3 * SegmentMapping::kMaxLength + 5;
  m.moffset = 8;
  std::string out;
  EncodeMappingSplit(m, &out);
  ASSERT_EQ(out.size(), 4 * 16u);
  uint64_t next = 10, mnext = 8;
  for (int i = 0; i < 4; ++i) {
    SegmentMapping d = SegmentMapping::DecodeFrom(out.data() + 16 * i);
    EXPECT_EQ(d.offset, next);
    EXPECT_EQ(d.moffset, mnext);
    next += d.length;
    mnext += d.length;
  }
  EXPECT_EQ(next, m.end());
}

}  // namespace
}  // namespace dadi::blockstore
