// Reads the reference blobs made by overlaybd's own tools (tests/data/overlaybd, see its README)
// and checks the results overlaybd documents for them; then checks that what dadi writes has the
// same bytes where overlaybd's choices are deterministic.
#include <random>

#include "blockstore/blob/layer_blob.h"
#include "blockstore/file/file.h"
#include "blockstore/lsmt/layer_stack.h"
#include "blockstore/zfile/zfile_reader.h"
#include "blockstore/zfile/zfile_writer.h"
#include "gtest/gtest.h"
#include "tests/blockstore/test_util.h"
#include "tests/support/scratch_dir.h"

namespace dadi::blockstore {
namespace {

using testing::ReadFileOrDie;
using testing::TestDataPath;

constexpr char kStackSha[] = "368b64f328a67d037e3b4ae361799cde5e2025cdd0f8e6b2a98ca19b82c537dc";
// sha256 of l0-plain.lsmt (the sealed layer 0 that l0.commit compresses), not kept in the repo.
constexpr char kL0PlainSha[] = "8aab245b2770d316eadf60775e5d6272b99ce68d101f2f0ff08dfa37a1fba197";

std::shared_ptr<const RandomAccessFile> OpenData(const std::string& name) {
  absl::StatusOr<std::unique_ptr<RandomAccessFile>> f =
      OpenLocalFile(TestDataPath("overlaybd/" + name));
  EXPECT_TRUE(f.ok()) << f.status();
  return f.ok() ? std::shared_ptr<const RandomAccessFile>(*std::move(f)) : nullptr;
}

std::string ReadAll(const RandomAccessFile& f) {
  std::string out(f.Size(), '\0');
  EXPECT_TRUE(PreadExact(f, 0, out.size(), out.data(), "all").ok());
  return out;
}

struct ZFileCase {
  const char* file;
  ZFileAlgorithm algorithm;
  uint32_t block_size;
};

class ReferenceZFileTest : public ::testing::TestWithParam<ZFileCase> {};

TEST_P(ReferenceZFileTest, DecompressesToMixedRaw) {
  const std::string raw = ReadFileOrDie(TestDataPath("overlaybd/mixed.raw"));
  ASSERT_EQ(raw.size(), 166221u);
  auto file = OpenData(GetParam().file);
  ASSERT_NE(file, nullptr);
  absl::StatusOr<std::unique_ptr<ZFileReader>> z = ZFileReader::Open(file);
  ASSERT_TRUE(z.ok()) << z.status();
  EXPECT_EQ((*z)->info().algorithm, GetParam().algorithm);
  EXPECT_EQ((*z)->info().block_size, GetParam().block_size);
  EXPECT_EQ((*z)->info().verify, 1);
  EXPECT_EQ((*z)->Size(), raw.size());
  EXPECT_TRUE((*z)->VerifyAll().ok());
  EXPECT_EQ(ReadAll(**z), raw);
  // Random ranges, through the cache.
  std::mt19937_64 rng(7);
  for (int i = 0; i < 200; ++i) {
    uint64_t off = rng() % raw.size();
    size_t n = 1 + rng() % 70000;
    std::string buf(n, '\0');
    absl::StatusOr<size_t> got = (*z)->Pread(off, n, buf.data());
    ASSERT_TRUE(got.ok()) << got.status();
    size_t want = std::min<size_t>(n, raw.size() - off);
    ASSERT_EQ(*got, want);
    ASSERT_EQ(buf.substr(0, want), raw.substr(off, want)) << "offset " << off << " n " << n;
  }
}

// dadi's writer with overlaybd's settings produces the same blocks and jump table; the header
// differs at most in fields overlaybd leaves unset.
TEST_P(ReferenceZFileTest, DadiWriterMatchesOverlaybdBlocks) {
  const std::string raw = ReadFileOrDie(TestDataPath("overlaybd/mixed.raw"));
  const std::string ref = ReadFileOrDie(TestDataPath(std::string("overlaybd/") + GetParam().file));
  testing::StringWritableFile out;
  ZFileWriterOptions o;
  o.algorithm = GetParam().algorithm;
  o.block_size = GetParam().block_size;
  absl::StatusOr<std::unique_ptr<ZFileWriter>> w = ZFileWriter::Create(&out, o);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->Append(raw).ok());
  ASSERT_TRUE((*w)->Close().ok());
  if (GetParam().algorithm == ZFileAlgorithm::kZstd) {
    // ZSTD output depends on the library version and level; check the shape only.
    EXPECT_EQ(out.data().substr(0, 24), ref.substr(0, 24));
    return;
  }
  EXPECT_EQ(out.data().size(), ref.size());
  EXPECT_EQ(out.data().substr(512, out.data().size() - 1024), ref.substr(512, ref.size() - 1024));
  EXPECT_EQ(out.data().substr(0, 512), ref.substr(0, 512)) << "header";
  EXPECT_EQ(out.data().substr(out.data().size() - 512), ref.substr(ref.size() - 512)) << "trailer";
}

INSTANTIATE_TEST_SUITE_P(
    All, ReferenceZFileTest,
    ::testing::Values(ZFileCase{"mixed-lz4-4k.zfile", ZFileAlgorithm::kLz4, 4096},
                      ZFileCase{"mixed-lz4-16k.zfile", ZFileAlgorithm::kLz4, 16384},
                      ZFileCase{"mixed-zstd-64k.zfile", ZFileAlgorithm::kZstd, 65536}));

TEST(ReferenceBlobTest, L0CommitHoldsL0PlainLayer) {
  absl::StatusOr<std::unique_ptr<LayerBlob>> b = LayerBlob::Open(OpenData("l0.commit"));
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ((*b)->entry().data_offset, 1536u);
  EXPECT_EQ((*b)->entry().size, 68910u);
  EXPECT_TRUE((*b)->zfile()->header().header_overwrite());
  EXPECT_EQ(testing::Sha256Hex(ReadAll(*(*b)->zfile())), kL0PlainSha);
  const LsmtHeader& t = (*b)->layer()->trailer();
  EXPECT_EQ(t.uuid, "11111111-1111-1111-1111-111111111111");
  EXPECT_EQ(t.virtual_size, uint64_t{1} << 30);
  // The whole blob is smaller than head + tail: one read.
  EXPECT_EQ((*b)->open_cost().reads, 1u);
}

TEST(ReferenceBlobTest, OpenCostIsTwoReadsForALargeBlob) {
  LayerBlobOptions o;
  o.tail_bytes = 32 << 10;  // smaller than the blob, larger than its metadata
  absl::StatusOr<std::unique_ptr<LayerBlob>> b = LayerBlob::Open(OpenData("l1.commit"), o);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ((*b)->open_cost().reads, 2u);
  EXPECT_EQ((*b)->open_cost().bytes, 4096u + (32 << 10));
  EXPECT_EQ((*b)->layer()->trailer().parent_uuid, "11111111-1111-1111-1111-111111111111");
}

class ReferenceStackTest : public ::testing::TestWithParam<const char*> {};

TEST_P(ReferenceStackTest, ExportsToDocumentedImage) {
  std::vector<std::shared_ptr<const SealedLayer>> layers;
  std::vector<std::unique_ptr<LayerBlob>> blobs;
  for (const char* name : {"l0.commit", GetParam()}) {
    absl::StatusOr<std::unique_ptr<LayerBlob>> b = LayerBlob::Open(OpenData(name));
    ASSERT_TRUE(b.ok()) << b.status();
    layers.push_back((*b)->layer());
    blobs.push_back(*std::move(b));
  }
  absl::StatusOr<std::shared_ptr<const LayerStack>> stack = LayerStack::Create(layers);
  ASSERT_TRUE(stack.ok());
  EXPECT_EQ((*stack)->Size(), uint64_t{1} << 30);
  EXPECT_EQ(testing::Sha256OfFile(**stack), kStackSha);
}

INSTANTIATE_TEST_SUITE_P(All, ReferenceStackTest, ::testing::Values("l1.commit", "l1-zstd.commit"));

// Recompress layer 1 with dadi's writer, wrap it with dadi's tar envelope, stack it on
// overlaybd's layer 0: the same image.
TEST(ReferenceStackTest, DadiRewrittenLayerGivesSameImage) {
  absl::StatusOr<std::unique_ptr<LayerBlob>> l1 = LayerBlob::Open(OpenData("l1.commit"));
  ASSERT_TRUE(l1.ok());
  const std::string sealed = ReadAll(*(*l1)->zfile());
  testing::StringWritableFile z;
  ZFileWriterOptions o;
  o.algorithm = ZFileAlgorithm::kZstd;
  o.block_size = 16384;
  o.threads = 2;
  auto w = ZFileWriter::Create(&z, o);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->Append(sealed).ok());
  ASSERT_TRUE((*w)->Close().ok());
  auto zf = NewMemoryFile(z.data(), "z");
  testing::StringWritableFile blob;
  ASSERT_TRUE(WriteLayerBlob(*zf, &(*w)->final_header(), &blob).ok());
  absl::StatusOr<std::unique_ptr<LayerBlob>> mine =
      LayerBlob::Open(std::shared_ptr<const RandomAccessFile>(NewMemoryFile(blob.data(), "mine")));
  ASSERT_TRUE(mine.ok()) << mine.status();
  EXPECT_EQ((*mine)->entry().data_offset, 1536u);
  absl::StatusOr<std::unique_ptr<LayerBlob>> l0 = LayerBlob::Open(OpenData("l0.commit"));
  ASSERT_TRUE(l0.ok());
  auto stack = LayerStack::Create({(*l0)->layer(), (*mine)->layer()});
  ASSERT_TRUE(stack.ok());
  EXPECT_EQ(testing::Sha256OfFile(**stack), kStackSha);
}

}  // namespace
}  // namespace dadi::blockstore
