// SegmentMap and MergeIndexes against a per-sector model.
#include "blockstore/lsmt/segment_index.h"

#include <random>

#include "gtest/gtest.h"

namespace dadi::blockstore {
namespace {

struct Cell {
  bool mapped = false;
  bool zeroed = false;
  uint8_t tag = 0;
  uint64_t moffset = 0;  // sector of the data for this very sector
  bool operator==(const Cell&) const = default;
};

std::vector<Cell> Expand(const std::vector<SegmentMapping>& ms, size_t n) {
  std::vector<Cell> cells(n);
  for (const SegmentMapping& m : ms) {
    for (uint64_t s = m.offset; s < m.end(); ++s) {
      cells[s] = Cell{true, m.zeroed, m.tag, m.zeroed ? 0 : m.moffset + (s - m.offset)};
    }
  }
  return cells;
}

void Apply(std::vector<Cell>& cells, const SegmentMapping& m) {
  for (uint64_t s = m.offset; s < m.end(); ++s) {
    cells[s] = Cell{true, m.zeroed, m.tag, m.zeroed ? 0 : m.moffset + (s - m.offset)};
  }
}

SegmentMapping RandomMapping(std::mt19937_64& rng, size_t space, uint64_t& mnext, uint8_t tag) {
  SegmentMapping m;
  m.offset = rng() % space;
  m.length = static_cast<uint32_t>(1 + rng() % std::min<uint64_t>(64, space - m.offset));
  m.zeroed = rng() % 5 == 0;
  m.tag = tag;
  if (!m.zeroed) {
    m.moffset = mnext;
    mnext += m.length;
  }
  return m;
}

TEST(SegmentMapTest, OverwritesMatchModel) {
  constexpr size_t kSpace = 1500;
  for (uint32_t seed = 0; seed < 20; ++seed) {
    std::mt19937_64 rng(seed);
    SegmentMap map;
    std::vector<Cell> model(kSpace);
    uint64_t mnext = 8;
    for (int i = 0; i < 300; ++i) {
      SegmentMapping m = RandomMapping(rng, kSpace, mnext, 0);
      // Sometimes continue the previous write exactly (exercises joining).
      map.Insert(m);
      Apply(model, m);
    }
    std::vector<SegmentMapping> v = map.ToVector();
    for (size_t i = 1; i < v.size(); ++i) ASSERT_LE(v[i - 1].end(), v[i].offset);
    ASSERT_EQ(Expand(v, kSpace), model) << "seed " << seed;
    // Lookups of random windows agree with the model too.
    for (int i = 0; i < 50; ++i) {
      uint64_t off = rng() % kSpace, len = 1 + rng() % (kSpace - off);
      std::vector<SegmentMapping> pieces;
      map.Lookup(off, len, &pieces);
      std::vector<Cell> want(kSpace);
      for (uint64_t s = off; s < off + len; ++s) want[s] = model[s];
      ASSERT_EQ(Expand(pieces, kSpace), want);
    }
  }
}

TEST(SegmentMapTest, SequentialWritesJoin) {
  SegmentMap map;
  for (uint64_t i = 0; i < 1000; ++i) map.Insert(SegmentMapping{i * 8, 8, 8 + i * 8, false, 0});
  EXPECT_EQ(map.size(), 1u);
}

TEST(SegmentIndexTest, FromSortedRejectsOverlapAndEmpty) {
  EXPECT_TRUE(SegmentIndex::FromSorted({{0, 4, 8}, {4, 4, 12}}, "t").ok());
  EXPECT_FALSE(SegmentIndex::FromSorted({{0, 5, 8}, {4, 4, 12}}, "t").ok());
  EXPECT_FALSE(SegmentIndex::FromSorted({{8, 4, 8}, {0, 4, 12}}, "t").ok());
  EXPECT_FALSE(SegmentIndex::FromSorted({{0, 0, 8}}, "t").ok());
}

TEST(MergeIndexesTest, TopLayerWinsLikeModel) {
  constexpr size_t kSpace = 2000;
  for (uint32_t seed = 0; seed < 10; ++seed) {
    std::mt19937_64 rng(100 + seed);
    size_t nlayers = 1 + rng() % 12;
    std::vector<SegmentIndex> layers;
    std::vector<Cell> model(kSpace);
    for (size_t l = 0; l < nlayers; ++l) {
      SegmentMap map;
      uint64_t mnext = 8;
      for (int i = 0; i < 60; ++i) map.Insert(RandomMapping(rng, kSpace, mnext, 0));
      std::vector<SegmentMapping> v = map.ToVector();
      for (SegmentMapping m : v) {
        m.tag = static_cast<uint8_t>(l);
        Apply(model, m);
      }
      auto idx = SegmentIndex::FromSorted(v, "layer");
      ASSERT_TRUE(idx.ok());
      layers.push_back(*idx);
    }
    std::vector<const SegmentIndex*> ptrs;
    for (const auto& l : layers) ptrs.push_back(&l);
    SegmentIndex merged = MergeIndexes(ptrs);
    ASSERT_EQ(Expand(merged.mappings(), kSpace), model) << "seed " << seed;
    std::vector<SegmentMapping> pieces;
    merged.Lookup(100, 50, &pieces);
    std::vector<Cell> want(kSpace);
    for (uint64_t s = 100; s < 150; ++s) want[s] = model[s];
    EXPECT_EQ(Expand(pieces, kSpace), want);
  }
}

}  // namespace
}  // namespace dadi::blockstore
