// Writable layers, commit, sealed layers and stacks against a plain in-memory disk model, and
// sealed layers corrupted at every field.
#include <random>
#include <thread>

#include "blockstore/blob/layer_blob.h"
#include "blockstore/file/coding.h"
#include "blockstore/lsmt/layer_stack.h"
#include "blockstore/lsmt/sealed_layer.h"
#include "blockstore/lsmt/sealed_layer_writer.h"
#include "blockstore/lsmt/writable_layer.h"
#include "blockstore/zfile/zfile_writer.h"
#include "gtest/gtest.h"
#include "tests/blockstore/test_util.h"
#include "tests/support/scratch_dir.h"

namespace dadi::blockstore {
namespace {

constexpr uint64_t kVirtual = 2 << 20;  // 2 MiB virtual disk

LayerInfo Info(int i) {
  return LayerInfo{kVirtual, absl::StrCat("uuid-", i), i > 0 ? absl::StrCat("uuid-", i - 1) : "",
                   "test"};
}

std::string Commit(const WritableLayer& layer) {
  testing::StringWritableFile out;
  EXPECT_TRUE(layer.Commit(&out).ok());
  return out.data();
}

std::shared_ptr<const SealedLayer> OpenSealed(std::string bytes) {
  auto l =
      SealedLayer::Open(std::shared_ptr<const RandomAccessFile>(NewMemoryFile(bytes, "sealed")));
  EXPECT_TRUE(l.ok()) << l.status();
  return l.ok() ? *l : nullptr;
}

// Random overlapping writes and discards, sector-aligned, into both the layer and the model.
void RandomWrites(WritableLayer& layer, std::string& model, std::mt19937_64& rng, int count) {
  for (int i = 0; i < count; ++i) {
    uint64_t off = (rng() % (kVirtual / 512)) * 512;
    uint64_t len = std::min<uint64_t>((1 + rng() % 64) * 512, kVirtual - off);
    if (rng() % 6 == 0) {
      ASSERT_TRUE(layer.Discard(off, len).ok());
      std::fill(model.begin() + off, model.begin() + off + len, '\0');
    } else {
      std::string data = testing::RandomBytes(len, rng);
      ASSERT_TRUE(layer.Write(off, data).ok());
      model.replace(off, len, data);
    }
  }
}

void ExpectSameReads(const RandomAccessFile& f, const std::string& model, std::mt19937_64& rng) {
  ASSERT_EQ(f.Size(), model.size());
  std::string all(model.size(), 'x');
  ASSERT_TRUE(PreadExact(f, 0, all.size(), all.data(), "all").ok());
  ASSERT_TRUE(all == model);
  for (int i = 0; i < 100; ++i) {
    uint64_t off = rng() % model.size();
    size_t n = 1 + rng() % 20000;
    std::string buf(n, 'x');
    auto got = f.Pread(off, n, buf.data());
    ASSERT_TRUE(got.ok());
    size_t want = std::min<size_t>(n, model.size() - off);
    ASSERT_EQ(*got, want);
    ASSERT_TRUE(buf.substr(0, want) == model.substr(off, want)) << "offset " << off;
  }
}

TEST(WritableLayerTest, OverwriteDiscardReopenAndCommit) {
  testing::ScratchDir dir;
  std::mt19937_64 rng(1);
  std::string model(kVirtual, '\0');
  {
    auto layer = WritableLayer::Create(dir.Join("d"), dir.Join("i"), Info(0));
    ASSERT_TRUE(layer.ok()) << layer.status();
    RandomWrites(**layer, model, rng, 300);
    auto wl = (*layer).get();
    // Reads of the writable layer itself.
    std::string buf(kVirtual, 'x');
    ASSERT_TRUE(wl->Pread(0, buf.size(), buf.data()).ok());
    EXPECT_TRUE(buf == model);
    ASSERT_TRUE(wl->Sync().ok());
  }
  auto reopened = WritableLayer::Open(dir.Join("d"), dir.Join("i"));
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_EQ((*reopened)->info().uuid, "uuid-0");
  std::string buf(kVirtual, 'x');
  ASSERT_TRUE((*reopened)->Pread(0, buf.size(), buf.data()).ok());
  EXPECT_TRUE(buf == model);
  auto sealed = OpenSealed(Commit(**reopened));
  ASSERT_NE(sealed, nullptr);
  EXPECT_EQ(sealed->trailer().uuid, "uuid-0");
  auto stack = LayerStack::Create({sealed});
  ASSERT_TRUE(stack.ok());
  ExpectSameReads(**stack, model, rng);
}

TEST(WritableLayerTest, RejectsUnalignedAndOutOfRange) {
  testing::ScratchDir dir;
  auto layer = WritableLayer::Create(dir.Join("d"), dir.Join("i"), Info(0));
  ASSERT_TRUE(layer.ok());
  EXPECT_EQ((*layer)->Write(100, std::string(512, 'a')).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*layer)->Write(0, std::string(100, 'a')).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*layer)->Write(kVirtual, std::string(512, 'a')).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*layer)->Discard(kVirtual - 512, 1024).code(), absl::StatusCode::kInvalidArgument);
}

TEST(WritableLayerTest, LargeExtentsStayFewSegments) {
  testing::ScratchDir dir;
  auto layer = WritableLayer::Create(dir.Join("d"), dir.Join("i"), Info(0));
  ASSERT_TRUE(layer.ok());
  std::string chunk(64 << 10, 'z');
  for (uint64_t off = 0; off < kVirtual; off += chunk.size()) {
    ASSERT_TRUE((*layer)->Write(off, chunk).ok());
  }
  EXPECT_EQ((*layer)->segment_count(), 1u);
  auto sealed = OpenSealed(Commit(**layer));
  ASSERT_NE(sealed, nullptr);
  // 4096 sectors split into entries of at most 16383 sectors: one entry.
  EXPECT_EQ(sealed->index().size(), 1u);
  EXPECT_EQ(sealed->data_bytes(), kVirtual);
}

// The property test of the issue: overlapping writes across layers, each layer committed,
// compressed with every block size and both algorithms, wrapped as a blob, stacked; reads
// compared with one in-memory disk.
TEST(LayerStackTest, RandomLayersMatchModelThroughBlobs) {
  testing::ScratchDir dir;
  const uint32_t block_sizes[] = {4096, 8192, 16384, 32768, 65536};
  for (uint32_t seed = 0; seed < 4; ++seed) {
    std::mt19937_64 rng(seed);
    std::string model(kVirtual, '\0');
    std::vector<std::shared_ptr<const SealedLayer>> plain, blobs;
    std::vector<std::unique_ptr<LayerBlob>> keep;
    int nlayers = 1 + static_cast<int>(rng() % 8);
    for (int l = 0; l < nlayers; ++l) {
      auto layer = WritableLayer::Create(dir.Join(absl::StrCat("d", l)),
                                         dir.Join(absl::StrCat("i", l)), Info(l));
      ASSERT_TRUE(layer.ok());
      RandomWrites(**layer, model, rng, 40);
      std::string sealed = Commit(**layer);
      plain.push_back(OpenSealed(sealed));
      ZFileWriterOptions o;
      o.block_size = block_sizes[rng() % 5];
      o.algorithm = rng() % 2 ? ZFileAlgorithm::kLz4 : ZFileAlgorithm::kZstd;
      testing::StringWritableFile z;
      auto w = ZFileWriter::Create(&z, o);
      ASSERT_TRUE(w.ok());
      ASSERT_TRUE((*w)->Append(sealed).ok());
      ASSERT_TRUE((*w)->Close().ok());
      testing::StringWritableFile blob;
      ASSERT_TRUE(WriteLayerBlob(*NewMemoryFile(z.data()), &(*w)->final_header(), &blob).ok());
      auto b = LayerBlob::Open(std::shared_ptr<const RandomAccessFile>(NewMemoryFile(blob.data())));
      ASSERT_TRUE(b.ok()) << b.status();
      blobs.push_back((*b)->layer());
      keep.push_back(*std::move(b));
    }
    auto s1 = LayerStack::Create(plain);
    auto s2 = LayerStack::Create(blobs);
    ASSERT_TRUE(s1.ok() && s2.ok());
    ExpectSameReads(**s1, model, rng);
    ExpectSameReads(**s2, model, rng);
  }
}

TEST(LayerStackTest, ConcurrentReaders) {
  testing::ScratchDir dir;
  std::mt19937_64 rng(9);
  std::string model(kVirtual, '\0');
  std::vector<std::shared_ptr<const SealedLayer>> layers;
  for (int l = 0; l < 5; ++l) {
    auto layer = WritableLayer::Create(dir.Join(absl::StrCat("d", l)),
                                       dir.Join(absl::StrCat("i", l)), Info(l));
    ASSERT_TRUE(layer.ok());
    RandomWrites(**layer, model, rng, 50);
    layers.push_back(OpenSealed(Commit(**layer)));
  }
  auto stack = LayerStack::Create(layers);
  ASSERT_TRUE(stack.ok());
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 r(t);
      std::string buf(4096, '\0');
      for (int i = 0; i < 500; ++i) {
        uint64_t off = (r() % (kVirtual / 4096)) * 4096;
        if (!PreadExact(**stack, off, 4096, buf.data(), "t").ok() ||
            buf != model.substr(off, 4096)) {
          ++bad;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(bad.load(), 0);
}

TEST(LayerStackTest, LayerCountLimits) {
  EXPECT_FALSE(LayerStack::Create({}).ok());
  testing::StringWritableFile out;
  auto w = SealedLayerWriter::Create(&out, Info(0));
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->AddData(0, std::string(512, 'a')).ok());
  ASSERT_TRUE((*w)->Finish().ok());
  auto layer = OpenSealed(out.data());
  std::vector<std::shared_ptr<const SealedLayer>> layers(256, layer);
  auto stack = LayerStack::Create(layers);
  ASSERT_TRUE(stack.ok());
  std::string buf(1024, 'x');
  ASSERT_TRUE(PreadExact(**stack, 0, 1024, buf.data(), "t").ok());
  EXPECT_EQ(buf, std::string(512, 'a') + std::string(512, '\0'));
  EXPECT_EQ((*stack)->index().mappings()[0].tag, 255);
  layers.push_back(layer);
  EXPECT_EQ(LayerStack::Create(layers).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(WritableStackTest, WritableTopOverReadOnlyStack) {
  testing::ScratchDir dir;
  std::mt19937_64 rng(11);
  std::string model(kVirtual, '\0');
  std::vector<std::shared_ptr<const SealedLayer>> layers;
  for (int l = 0; l < 3; ++l) {
    auto layer = WritableLayer::Create(dir.Join(absl::StrCat("d", l)),
                                       dir.Join(absl::StrCat("i", l)), Info(l));
    ASSERT_TRUE(layer.ok());
    RandomWrites(**layer, model, rng, 40);
    layers.push_back(OpenSealed(Commit(**layer)));
  }
  auto lower = LayerStack::Create(layers);
  ASSERT_TRUE(lower.ok());
  auto top = WritableLayer::Create(dir.Join("dt"), dir.Join("it"), Info(3));
  ASSERT_TRUE(top.ok());
  WritableStack view(*lower, top->get());
  for (int i = 0; i < 200; ++i) {
    uint64_t off = rng() % (kVirtual - 10000);
    std::string data = testing::RandomBytes(1 + rng() % 9000, rng);  // unaligned on purpose
    ASSERT_TRUE(view.Write(off, data).ok());
    model.replace(off, data.size(), data);
  }
  ExpectSameReads(view, model, rng);
  // Commit the top and stack it: same image.
  layers.push_back(OpenSealed(Commit(**top)));
  auto full = LayerStack::Create(layers);
  ASSERT_TRUE(full.ok());
  ExpectSameReads(**full, model, rng);
}

TEST(SealedLayerWriterTest, RejectsOverlapAndMisalignment) {
  testing::StringWritableFile out;
  auto w = SealedLayerWriter::Create(&out, Info(0));
  ASSERT_TRUE(w.ok());
  EXPECT_FALSE((*w)->AddData(100, std::string(512, 'a')).ok());
  EXPECT_FALSE((*w)->AddData(kVirtual, std::string(512, 'a')).ok());
  ASSERT_TRUE((*w)->AddData(4096, std::string(1024, 'a')).ok());
  ASSERT_TRUE((*w)->AddZeroed(4096 + 512, 512).ok());
  EXPECT_EQ((*w)->Finish().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SealedLayerWriterTest, IndexIsPaddedLikeOverlaybd) {
  testing::StringWritableFile out;
  auto w = SealedLayerWriter::Create(&out, Info(0));
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->AddData(8192, std::string(512, 'b')).ok());
  ASSERT_TRUE((*w)->AddData(0, std::string(512, 'a')).ok());
  ASSERT_TRUE((*w)->Finish().ok());
  const std::string& s = out.data();
  LsmtHeader t;
  ASSERT_TRUE(t.DecodeFrom(s.substr(s.size() - 4096), "t").ok());
  EXPECT_EQ(t.index_size, 256u);
  EXPECT_EQ(t.flags, LsmtHeader::kFlagTypeData | LsmtHeader::kFlagSealed);
  auto layer = OpenSealed(s);
  ASSERT_NE(layer, nullptr);
  ASSERT_EQ(layer->index().size(), 2u);
  EXPECT_EQ(layer->index().mappings()[0].offset, 0u);
  EXPECT_EQ(layer->index().mappings()[0].moffset, 9u);  // second sector of data after header
}

// A small sealed layer whose index entries and trailer fields the corruption tests rewrite.
std::string SmallSealed() {
  testing::StringWritableFile out;
  auto w = SealedLayerWriter::Create(&out, Info(0));
  EXPECT_TRUE(w.ok());
  EXPECT_TRUE((*w)->AddData(0, std::string(1024, 'a')).ok());
  EXPECT_TRUE((*w)->AddData(8192, std::string(512, 'b')).ok());
  EXPECT_TRUE((*w)->AddZeroed(16384, 4096).ok());
  EXPECT_TRUE((*w)->Finish().ok());
  return out.data();
}

std::string WithTrailer(const std::string& s, const std::function<void(LsmtHeader&)>& change) {
  LsmtHeader t;
  EXPECT_TRUE(t.DecodeFrom(absl::string_view(s).substr(s.size() - 4096), "t").ok());
  change(t);
  std::string enc;
  t.EncodeTo(&enc);
  return s.substr(0, s.size() - 4096) + enc;
}

std::string WithEntry(const std::string& s, int i, const std::function<void(SegmentMapping&)>& f) {
  LsmtHeader t;
  EXPECT_TRUE(t.DecodeFrom(absl::string_view(s).substr(s.size() - 4096), "t").ok());
  std::string out = s;
  char* p = out.data() + t.index_offset + 16 * i;
  SegmentMapping m = SegmentMapping::DecodeFrom(p);
  f(m);
  m.EncodeTo(p);
  return out;
}

absl::StatusCode OpenCode(const std::string& s) {
  return SealedLayer::Open(std::shared_ptr<const RandomAccessFile>(NewMemoryFile(s, "bad")))
      .status()
      .code();
}

TEST(SealedLayerCorruptionTest, TrailerFieldsAreChecked) {
  const std::string s = SmallSealed();
  ASSERT_EQ(OpenCode(s), absl::StatusCode::kOk);
  std::vector<std::function<void(LsmtHeader&)>> changes = {
      [](LsmtHeader& t) { t.flags = 0; },
      [](LsmtHeader& t) { t.flags |= LsmtHeader::kFlagIsHeader; },
      [](LsmtHeader& t) { t.index_size = uint64_t{1} << 62; },
      [](LsmtHeader& t) { t.index_size += 1000; },
      [](LsmtHeader& t) { t.index_offset = ~uint64_t{0} - 511; },
      [](LsmtHeader& t) { t.index_offset = 0; },
      [](LsmtHeader& t) { t.index_offset += 3; },
      [](LsmtHeader& t) { t.virtual_size = 1000; },
      [](LsmtHeader& t) { t.virtual_size = 4096; },  // entries now past the virtual size
      [](LsmtHeader& t) { t.version = 7; },
  };
  for (size_t i = 0; i < changes.size(); ++i) {
    EXPECT_NE(OpenCode(WithTrailer(s, changes[i])), absl::StatusCode::kOk) << "case " << i;
  }
}

TEST(SealedLayerCorruptionTest, IndexEntriesAreChecked) {
  const std::string s = SmallSealed();
  std::vector<std::pair<int, std::function<void(SegmentMapping&)>>> changes = {
      {1, [](SegmentMapping& m) { m.offset = 0; }},                   // overlaps entry 0
      {0, [](SegmentMapping& m) { m.offset = 100; }},                 // unsorted
      {0, [](SegmentMapping& m) { m.length = 0; }},                   // empty
      {1, [](SegmentMapping& m) { m.moffset = 1; }},                  // inside the header
      {1, [](SegmentMapping& m) { m.moffset = 1 << 20; }},            // past the data
      {2, [](SegmentMapping& m) { m.offset = kVirtual / 512 - 2; }},  // past virtual size
  };
  for (size_t i = 0; i < changes.size(); ++i) {
    auto code = OpenCode(WithEntry(s, changes[i].first, changes[i].second));
    EXPECT_EQ(code, absl::StatusCode::kDataLoss) << "case " << i;
  }
}

// A file claiming a huge size (as a ZFile's decompressed view can) with a huge index count is
// refused before anything is allocated for it.
TEST(SealedLayerCorruptionTest, HugeClaimedIndexIsRefused) {
  class HugeFile final : public RandomAccessFile {
   public:
    explicit HugeFile(std::string trailer) : trailer_(std::move(trailer)) {}
    uint64_t Size() const override { return uint64_t{1} << 40; }
    absl::StatusOr<size_t> Pread(uint64_t offset, size_t n, char* buf) const override {
      std::memset(buf, 0, n);
      if (offset == Size() - 4096 && n == 4096) std::memcpy(buf, trailer_.data(), 4096);
      return n;
    }
    std::string Name() const override { return "huge"; }

   private:
    std::string trailer_;
  };
  LsmtHeader t;
  t.flags = LsmtHeader::kFlagTypeData | LsmtHeader::kFlagSealed;
  t.index_offset = 4096;
  t.index_size = SealedLayer::kMaxIndexEntries + 1;
  t.virtual_size = uint64_t{1} << 40;
  std::string enc;
  t.EncodeTo(&enc);
  auto l = SealedLayer::Open(std::make_shared<HugeFile>(enc));
  EXPECT_EQ(l.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(l.status().message().find("limit"), std::string::npos) << l.status();
}

TEST(SealedLayerCorruptionTest, EveryTruncationFails) {
  const std::string s = SmallSealed();
  for (size_t len = 0; len < s.size(); len += 97) {
    EXPECT_NE(OpenCode(s.substr(0, len)), absl::StatusCode::kOk) << len;
  }
  EXPECT_NE(OpenCode(s.substr(0, s.size() - 1)), absl::StatusCode::kOk);
}

}  // namespace
}  // namespace dadi::blockstore
