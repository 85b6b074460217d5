#include "blockstore/blob/layer_blob.h"

#include <algorithm>
#include <random>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "blockstore/blob/layer_blob_writer.h"
#include "blockstore/file/file_views.h"
#include "blockstore/lsmt/layer_stack.h"
#include "blockstore/lsmt/sealed_layer_writer.h"
#include "blockstore/zfile/zfile_writer.h"
#include "gtest/gtest.h"
#include "tests/blockstore/test_util.h"
#include "tests/support/scratch_dir.h"

namespace dadi::blockstore {
namespace {

// A blob of a sealed layer with `mib` MiB of random data.
std::string MakeBlob(size_t mib, bool overwrite_header) {
  testing::StringWritableFile z;
  auto zw = ZFileWriter::Create(&z, {});
  EXPECT_TRUE(zw.ok());
  auto lw = SealedLayerWriter::Create(zw->get(), LayerInfo{64 << 20, "u", "", ""});
  EXPECT_TRUE(lw.ok());
  std::mt19937_64 rng(mib);
  for (size_t i = 0; i < mib; ++i) {
    EXPECT_TRUE((*lw)->AddData(i * 2 * (1 << 20), testing::RandomBytes(1 << 20, rng)).ok());
  }
  EXPECT_TRUE((*lw)->Finish().ok());
  EXPECT_TRUE((*zw)->Close().ok());
  testing::StringWritableFile blob;
  EXPECT_TRUE(WriteLayerBlob(*NewMemoryFile(z.data()),
                             overwrite_header ? &(*zw)->final_header() : nullptr, &blob)
                  .ok());
  return blob.data();
}

// Records the byte ranges each Pread returned.
class RecordingFile final : public RandomAccessFile {
 public:
  explicit RecordingFile(std::string data) : base_(NewMemoryFile(std::move(data))) {}
  uint64_t Size() const override { return base_->Size(); }
  absl::StatusOr<size_t> Pread(uint64_t offset, size_t n, char* buf) const override {
    absl::StatusOr<size_t> got = base_->Pread(offset, n, buf);
    if (got.ok() && *got > 0) {
      absl::MutexLock lock(&mu_);
      reads_.push_back(ByteRange{offset, *got});
    }
    return got;
  }
  std::string Name() const override { return "recording"; }
  std::vector<ByteRange> TakeReads() const {
    absl::MutexLock lock(&mu_);
    return std::exchange(reads_, {});
  }

 private:
  std::unique_ptr<RandomAccessFile> base_;
  mutable absl::Mutex mu_;
  mutable std::vector<ByteRange> reads_ ABSL_GUARDED_BY(mu_);
};

// The bytes covered by `ranges`, as a sorted list of disjoint ranges.
std::vector<ByteRange> Union(std::vector<ByteRange> ranges) {
  std::sort(ranges.begin(), ranges.end(),
            [](const ByteRange& a, const ByteRange& b) { return a.offset < b.offset; });
  std::vector<ByteRange> out;
  for (const ByteRange& r : ranges) {
    if (!out.empty() && r.offset <= out.back().offset + out.back().length) {
      out.back().length =
          std::max(out.back().offset + out.back().length, r.offset + r.length) - out.back().offset;
    } else {
      out.push_back(r);
    }
  }
  return out;
}

// Locate names exactly the stored bytes a read of the stack would read, in the blob of the
// layer that maps each part of the range: two layers, where the upper one hides part of the
// lower one and unmapped sectors store nothing.
TEST(LayerBlobTest, LocateNamesTheStoredBytesAReadTouches) {
  // Lower: MiB 0, 2, 4 mapped. Upper: MiB 0 and 2 of its own, so the lower layer only serves
  // MiB 4 (and MiB 1, 3 are unmapped in both).
  const std::string lower = MakeBlob(3, true);
  const std::string upper = MakeBlob(2, false);
  const std::vector<ByteRange> disk_ranges = {
      {0, 4096},                 // the upper layer's first block
      {(1 << 20) - 100, 200},    // across the end of a mapped MiB into an unmapped one
      {(3 << 20) + 5, 1 << 20},  // unmapped MiB 3 then the lower layer's MiB 4
      {(2 << 20) + 70000, 300000},
      {(6 << 20), 4096},  // unmapped everywhere
  };
  for (const ByteRange& want : disk_ranges) {
    // Fresh readers per range, so no decompressed block is cached from an earlier read.
    auto lower_file = std::make_shared<RecordingFile>(lower);
    auto upper_file = std::make_shared<RecordingFile>(upper);
    auto lb = LayerBlob::Open(lower_file);
    auto ub = LayerBlob::Open(upper_file);
    ASSERT_TRUE(lb.ok() && ub.ok());
    auto stack = LayerStack::Create({(*lb)->layer(), (*ub)->layer()});
    ASSERT_TRUE(stack.ok());
    lower_file->TakeReads();
    upper_file->TakeReads();

    std::vector<FileExtent> extents;
    (*stack)->Locate(want.offset, want.length, &extents);
    std::vector<ByteRange> located_lower, located_upper;
    for (const FileExtent& e : extents) {
      ASSERT_TRUE(e.file == lower_file.get() || e.file == upper_file.get()) << e.file->Name();
      (e.file == lower_file.get() ? located_lower : located_upper).push_back(e.range);
    }
    std::string buf(want.length, '\0');
    ASSERT_TRUE((*stack)->Pread(want.offset, want.length, buf.data()).ok());
    EXPECT_EQ(Union(located_lower), Union(lower_file->TakeReads())) << want.offset;
    EXPECT_EQ(Union(located_upper), Union(upper_file->TakeReads())) << want.offset;
    if (want.offset == 6 << 20) {
      EXPECT_TRUE(extents.empty());
    }
    if (want.offset == (3 << 20) + 5) {
      EXPECT_TRUE(located_upper.empty());
      EXPECT_FALSE(located_lower.empty());
    }
  }
}

// WarmCache through a stack decompresses what each layer maps of the range: reading the range
// afterwards reads no blob.
TEST(LayerBlobTest, WarmCacheThroughTheStackLeavesNothingToRead) {
  auto lower_file = std::make_shared<RecordingFile>(MakeBlob(3, true));
  auto upper_file = std::make_shared<RecordingFile>(MakeBlob(2, false));
  auto lb = LayerBlob::Open(lower_file);
  auto ub = LayerBlob::Open(upper_file);
  ASSERT_TRUE(lb.ok() && ub.ok());
  auto stack = LayerStack::Create({(*lb)->layer(), (*ub)->layer()});
  ASSERT_TRUE(stack.ok());
  const ByteRange range{(2 << 20) + 5000, (3 << 20)};  // upper MiB 2, unmapped 3, lower 4
  lower_file->TakeReads();
  upper_file->TakeReads();
  ASSERT_TRUE((*stack)->WarmCache(range.offset, range.length).ok());
  EXPECT_FALSE(lower_file->TakeReads().empty());
  EXPECT_FALSE(upper_file->TakeReads().empty());
  std::string buf(range.length, '\0');
  ASSERT_TRUE((*stack)->Pread(range.offset, range.length, buf.data()).ok());
  EXPECT_TRUE(lower_file->TakeReads().empty());
  EXPECT_TRUE(upper_file->TakeReads().empty());
}

TEST(LayerBlobTest, OpensInTwoReadsAndReportsCost) {
  for (bool overwrite : {true, false}) {
    std::string blob = MakeBlob(4, overwrite);
    auto b = LayerBlob::Open(std::shared_ptr<const RandomAccessFile>(NewMemoryFile(blob)));
    ASSERT_TRUE(b.ok()) << b.status();
    EXPECT_EQ((*b)->open_cost().reads, 2u) << overwrite;
    EXPECT_EQ((*b)->open_cost().bytes, 4096u + (256 << 10));
    EXPECT_EQ((*b)->layer()->data_bytes(), 4u << 20);
    EXPECT_EQ((*b)->zfile()->header().header_overwrite(), overwrite);
  }
}

TEST(LayerBlobTest, OpenAnyRecognisesEachFormat) {
  std::string blob = MakeBlob(1, true);
  auto b = LayerBlob::OpenAny(std::shared_ptr<const RandomAccessFile>(NewMemoryFile(blob)));
  ASSERT_TRUE(b.ok());
  EXPECT_EQ((*b)->format(), LayerFormat::kBlob);
  const std::string z = blob.substr((*b)->entry().data_offset, (*b)->entry().size);
  auto bz = LayerBlob::OpenAny(std::shared_ptr<const RandomAccessFile>(NewMemoryFile(z)));
  ASSERT_TRUE(bz.ok()) << bz.status();
  EXPECT_EQ((*bz)->format(), LayerFormat::kZFile);
  std::string sealed((*bz)->zfile()->Size(), '\0');
  ASSERT_TRUE(PreadExact(*(*bz)->zfile(), 0, sealed.size(), sealed.data(), "s").ok());
  auto bs = LayerBlob::OpenAny(std::shared_ptr<const RandomAccessFile>(NewMemoryFile(sealed)));
  ASSERT_TRUE(bs.ok()) << bs.status();
  EXPECT_EQ((*bs)->format(), LayerFormat::kSealedLsmt);
  EXPECT_EQ((*bs)->layer()->index().mappings(), (*b)->layer()->index().mappings());
}

TEST(LayerBlobTest, CorruptionAnywhereInMetadataFailsCleanly) {
  const std::string blob = MakeBlob(1, false);
  auto good = LayerBlob::Open(std::shared_ptr<const RandomAccessFile>(NewMemoryFile(blob)));
  ASSERT_TRUE(good.ok());
  std::mt19937_64 rng(3);
  // Truncations and random byte changes: never a crash; truncations always fail.
  for (int i = 0; i < 300; ++i) {
    size_t len = rng() % blob.size();
    EXPECT_FALSE(
        LayerBlob::Open(std::shared_ptr<const RandomAccessFile>(NewMemoryFile(blob.substr(0, len))))
            .ok());
    std::string bad = blob;
    bad[rng() % 2048] ^= 0x20;                   // tar headers and ZFile header
    bad[bad.size() - 1 - rng() % 8192] ^= 0x20;  // jump table, trailer, end blocks
    (void)LayerBlob::Open(std::shared_ptr<const RandomAccessFile>(NewMemoryFile(bad)));
  }
}

// Streaming a sealed layer straight into a blob file gives the same bytes as compressing in
// memory and wrapping afterwards.
TEST(LayerBlobFileWriterTest, StreamsTheSameBytesAsWrappingAfterwards) {
  testing::ScratchDir dir;
  std::mt19937_64 rng(5);
  const std::string d1 = testing::RandomBytes(300000, rng);
  const std::string d2 = testing::MixedData(200000, 6);
  auto write_layer = [&](WritableFile* out) {
    auto lw = SealedLayerWriter::Create(out, LayerInfo{8 << 20, "u", "p", "t"});
    ASSERT_TRUE(lw.ok());
    ASSERT_TRUE((*lw)->AddData(1 << 20, d1.substr(0, 299520)).ok());
    ASSERT_TRUE((*lw)->AddData(0, d2.substr(0, 199680)).ok());
    ASSERT_TRUE((*lw)->AddZeroed(4 << 20, 1 << 20).ok());
    ASSERT_TRUE((*lw)->Finish().ok());
  };
  ZFileWriterOptions o;
  o.algorithm = ZFileAlgorithm::kZstd;
  o.block_size = 32768;
  auto bw = LayerBlobFileWriter::Create(dir.Join("layer.commit"), o);
  ASSERT_TRUE(bw.ok()) << bw.status();
  write_layer(bw->get());
  ASSERT_TRUE((*bw)->Close().ok());
  EXPECT_FALSE((*bw)->Append("x").ok());

  testing::StringWritableFile z;
  auto zw = ZFileWriter::Create(&z, o);
  ASSERT_TRUE(zw.ok());
  write_layer(zw->get());
  ASSERT_TRUE((*zw)->Close().ok());
  testing::StringWritableFile blob;
  ASSERT_TRUE(WriteLayerBlob(*NewMemoryFile(z.data()), &(*zw)->final_header(), &blob).ok());

  const std::string streamed = testing::ReadFileOrDie(dir.Join("layer.commit"));
  EXPECT_EQ(streamed.size(), (*bw)->blob_size());
  EXPECT_EQ(z.data().size(), (*bw)->zfile_size());
  EXPECT_TRUE(streamed == blob.data());
  auto opened = LayerBlob::Open(std::shared_ptr<const RandomAccessFile>(NewMemoryFile(streamed)));
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ((*opened)->layer()->trailer().parent_uuid, "p");
  std::string buf(4096, '\0');
  ASSERT_TRUE(PreadExact(*(*opened)->layer()->shared_file(), 4096, 4096, buf.data(), "r").ok());
}

}  // namespace
}  // namespace dadi::blockstore
