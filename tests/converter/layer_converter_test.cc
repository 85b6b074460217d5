// ConvertLayer end to end: tar layers → overlaybd layer blobs → opened again as a blockstore
// stack → exported flat image checked by e2fsck, read back through Ext4Filesystem, mounted by
// the kernel (when loop devices are available), compared with overlaybd's own reference blobs.
#include "converter/layer_converter.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "blockstore/blob/layer_blob.h"
#include "blockstore/file/file.h"
#include "blockstore/remote/digest.h"
#include "converter/block_device.h"
#include "converter/ext4_filesystem.h"
#include "converter/tar_applier.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/converter/converter_test_util.h"
#include "tests/support/scratch_dir.h"

namespace dadi::converter {
namespace {

using ::testing::HasSubstr;
using testing::TarBuilder;
using testing::Tree;

std::string ReadFileOrDie(const std::string& path) {
  auto f = blockstore::OpenLocalFile(path);
  EXPECT_TRUE(f.ok()) << f.status();
  if (!f.ok()) return "";
  std::string data((*f)->Size(), '\0');
  EXPECT_TRUE(blockstore::PreadExact(**f, 0, data.size(), data.data(), "test read").ok());
  return data;
}

constexpr uint64_t kVsize = 256 << 20;
constexpr char kUuid0[] = "aaaaaaaa-0000-4000-8000-000000000000";
constexpr char kUuid1[] = "aaaaaaaa-0000-4000-8000-000000000001";
constexpr char kUuid2[] = "aaaaaaaa-0000-4000-8000-000000000002";

std::string Layer0() {
  TarBuilder t;
  TarBuilder::Meta exec;
  exec.mode = 0755;
  TarBuilder::Meta owned;
  owned.uid = 1000;
  owned.gid = 100;
  owned.xattrs = {{"user.note", "hello"}};
  t.Dir("etc").File("etc/hello.txt", "hello\n").File("etc/gone.txt", "to be removed\n");
  t.Dir("bin").File("bin/prog", std::string(300000, 'p'), exec);
  t.Dir("data").Dir("data/sub").File("data/sub/old.txt", "old\n", owned);
  t.Symlink("data/link", "../etc/hello.txt").Hardlink("data/hard", "etc/hello.txt");
  t.Fifo("data/fifo");
  return t.Finish();
}

std::string Layer1() {
  TarBuilder t(TarBuilder::Format::kPax, TarBuilder::Compression::kGzip);
  t.Dir("etc").File("etc/hello.txt", "hello again\n").Whiteout("etc/gone.txt");
  t.Dir("data").Dir("data/sub").Opaque("data/sub").File("data/sub/fresh.txt", "fresh\n");
  std::string big;
  for (int i = 0; i < 50000; ++i) big += absl::StrCat("line ", i, "\n");
  t.Dir("opt").File("opt/big.txt", big);
  return t.Finish();
}

std::string Layer2() {
  TarBuilder t(TarBuilder::Format::kGnu, TarBuilder::Compression::kZstd);
  t.Whiteout("bin");
  t.Dir("usr").Dir("usr/lib").SparseFile("usr/lib/sparse", 8 << 20, {{1 << 20, "middle"}});
  for (int i = 0; i < 300; ++i) t.File(absl::StrCat("usr/lib/f", i), absl::StrCat("file ", i));
  return t.Finish();
}

class LayerConverterTest : public ::testing::Test {
 protected:
  LayerConversionOptions Options(const std::string& algorithm = "lz4") {
    LayerConversionOptions o;
    o.algorithm = algorithm;
    o.vsize = kVsize;
    o.threads = 2;
    return o;
  }

  // Converts `tar` over `lowers`; returns the blob path.
  std::string Convert(const std::string& tar, const std::vector<std::string>& lowers,
                      const std::string& uuid, const std::string& parent, const std::string& out,
                      const LayerConversionOptions& o) {
    auto file = blockstore::NewMemoryFile(tar, out + ".tar");
    auto r = ConvertLayer(*file, lowers, uuid, parent, dir_.Join(out), o);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return "";
    EXPECT_EQ(r->blob_path, dir_.Join(out));
    EXPECT_EQ(r->uuid, uuid);
    return r->blob_path;
  }

  std::vector<std::string> ConvertThree(const std::string& algorithm = "lz4",
                                        const std::string& prefix = "l") {
    LayerConversionOptions o = Options(algorithm);
    std::vector<std::string> blobs;
    blobs.push_back(Convert(Layer0(), {}, kUuid0, "", prefix + "0", o));
    blobs.push_back(Convert(Layer1(), blobs, kUuid1, kUuid0, prefix + "1", o));
    blobs.push_back(Convert(Layer2(), blobs, kUuid2, kUuid1, prefix + "2", o));
    return blobs;
  }

  // Writes the flat image of a stack (sparse: zero chunks are skipped).
  void Export(const std::vector<std::string>& blobs, const std::string& path) {
    auto stack = OpenLayerStack(blobs);
    ASSERT_TRUE(stack.ok()) << stack.status();
    absl::Status s = testing::ExportFlat(**stack, path);
    ASSERT_TRUE(s.ok()) << s;
  }

  // The tree of a stack, read through Ext4Filesystem (no mount).
  Tree StackTree(const std::vector<std::string>& blobs) {
    auto stack = OpenLayerStack(blobs);
    EXPECT_TRUE(stack.ok()) << stack.status();
    if (!stack.ok()) return {};
    auto dev = NewCopyOnWriteBlockDevice(*stack);
    auto fs = Ext4Filesystem::Open(dev.get());
    EXPECT_TRUE(fs.ok()) << fs.status();
    if (!fs.ok()) return {};
    auto tree = testing::DumpExt4(**fs);
    EXPECT_TRUE(tree.ok()) << tree.status();
    return tree.ok() ? *tree : Tree{};
  }

  // The same tars applied with TarApplier to a memory device: what the stack must hold.
  Tree ExpectedTree(const std::vector<std::string>& tars, uint64_t vsize = kVsize) {
    auto dev = NewMemoryBlockDevice(vsize);
    auto fs = Ext4Filesystem::Create(dev.get(), Ext4Options{});
    EXPECT_TRUE(fs.ok()) << fs.status();
    for (const std::string& tar : tars) {
      auto file = blockstore::NewMemoryFile(tar, "expected");
      auto s = ApplyTarFile(**fs, *file, ApplyOptions{});
      EXPECT_TRUE(s.ok()) << s.status();
    }
    auto tree = testing::DumpExt4(**fs);
    EXPECT_TRUE(tree.ok()) << tree.status();
    return tree.ok() ? *tree : Tree{};
  }

  testing::ScratchDir dir_{"dadi-layerconv"};
};

TEST_F(LayerConverterTest, ThreeLayersStackIsACleanExt4WithTheAppliedTree) {
  std::vector<std::string> blobs = ConvertThree();
  ASSERT_EQ(blobs.size(), 3u);
  const std::string image = dir_.Join("flat.img");
  Export(blobs, image);
  absl::Status fsck = testing::Fsck(image);
  EXPECT_TRUE(fsck.ok()) << fsck;

  Tree got = StackTree(blobs);
  Tree want = ExpectedTree({Layer0(), Layer1(), Layer2()});
  EXPECT_EQ(testing::TreeDiff(want, got), "");
  ASSERT_TRUE(got.count("etc/hello.txt"));
  EXPECT_EQ(got["etc/hello.txt"].content, "hello again\n");
  EXPECT_FALSE(got.count("etc/gone.txt"));
  EXPECT_FALSE(got.count("data/sub/old.txt"));
  EXPECT_FALSE(got.count("bin/prog"));
  EXPECT_EQ(got["data/sub/fresh.txt"].content, "fresh\n");
  EXPECT_EQ(got["usr/lib/f299"].content, "file 299");
  EXPECT_EQ(got["data/link"].content, "../etc/hello.txt");

  // Each prefix of the stack is a file system too.
  Tree two = StackTree({blobs[0], blobs[1]});
  EXPECT_EQ(testing::TreeDiff(ExpectedTree({Layer0(), Layer1()}), two), "");

  // The kernel sees the same tree.
  const std::string mnt = dir_.Join("mnt");
  ASSERT_EQ(::mkdir(mnt.c_str(), 0755), 0);
  auto mount = testing::LoopMount::Mount(image, mnt);
  if (!mount.ok() && mount.status().code() == absl::StatusCode::kUnavailable) {
    GTEST_SKIP() << "no loop devices: " << mount.status();
  }
  ASSERT_TRUE(mount.ok()) << mount.status();
  auto kernel = testing::DumpDir(mnt);
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  EXPECT_EQ(testing::TreeDiff(got, *kernel), "");
}

TEST_F(LayerConverterTest, OutputIsDeterministicAndTheDigestIsTheBlobs) {
  std::vector<std::string> a = ConvertThree("lz4", "a");
  LayerConversionOptions o = Options();
  o.threads = 1;  // the thread count must not change a byte
  std::vector<std::string> b;
  b.push_back(Convert(Layer0(), {}, kUuid0, "", "b0", o));
  b.push_back(Convert(Layer1(), b, kUuid1, kUuid0, "b1", o));
  b.push_back(Convert(Layer2(), b, kUuid2, kUuid1, "b2", o));
  for (size_t i = 0; i < 3; ++i) {
    std::string x = ReadFileOrDie(a[i]), y = ReadFileOrDie(b[i]);
    EXPECT_TRUE(x == y) << "layer " << i << " differs";
  }
  // The returned digest and size describe the file written.
  auto file = blockstore::NewMemoryFile(Layer0());
  auto r = ConvertLayer(*file, {}, kUuid0, "", dir_.Join("d0"), Options());
  ASSERT_TRUE(r.ok()) << r.status();
  const std::string bytes = ReadFileOrDie(dir_.Join("d0"));
  EXPECT_EQ(r->digest, blockstore::Sha256Digest(bytes));
  EXPECT_EQ(r->size, bytes.size());
  EXPECT_TRUE(bytes == ReadFileOrDie(a[0]));
  // A different uuid gives a different blob (and ext4 uuid).
  auto other = ConvertLayer(*file, {}, kUuid1, "", dir_.Join("e0"), Options());
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_NE(other->digest, r->digest);
}

// The two stages of the pipeline: each layer applied over the sealed files of the layers below
// (as the image converter does while those are compressed), then compressed: the blobs are
// ConvertLayer's, byte for byte, and the stage timings are recorded.
TEST_F(LayerConverterTest, ApplyThenCompressGivesConvertLayersBlobs) {
  std::vector<std::string> direct = ConvertThree("lz4", "a");
  const std::vector<std::string> tars = {Layer0(), Layer1(), Layer2()};
  const std::vector<std::string> uuids = {kUuid0, kUuid1, kUuid2};
  std::vector<std::string> sealed;
  for (size_t i = 0; i < 3; ++i) {
    LayerConversionTimings at;
    LayerConversionOptions o = Options();
    o.timings = &at;
    auto file = blockstore::NewMemoryFile(tars[i], absl::StrCat("t", i));
    const std::string path = dir_.Join(absl::StrCat("s", i, ".sealed"));
    auto applied = ApplyLayer(*file, sealed, uuids[i], i ? uuids[i - 1] : "", path, o);
    ASSERT_TRUE(applied.ok()) << applied.status();
    EXPECT_EQ(applied->path, path);
    EXPECT_EQ(applied->size, std::filesystem::file_size(path));
    EXPECT_GT(at.apply_end, at.apply_start);
    EXPECT_EQ(at.compress_start, std::chrono::steady_clock::time_point{});
    // An uncompressed sealed LSMT file.
    auto f = blockstore::OpenLocalFile(path);
    ASSERT_TRUE(f.ok()) << f.status();
    auto blob = blockstore::LayerBlob::OpenAny(
        std::shared_ptr<const blockstore::RandomAccessFile>(*std::move(f)));
    ASSERT_TRUE(blob.ok()) << blob.status();
    EXPECT_EQ((*blob)->format(), blockstore::LayerFormat::kSealedLsmt);
    sealed.push_back(path);
  }
  for (size_t i = 0; i < 3; ++i) {
    LayerConversionTimings ct;
    LayerConversionOptions o = Options();
    o.timings = &ct;
    const std::string out = dir_.Join(absl::StrCat("c", i));
    auto r = CompressLayer(sealed[i], uuids[i], out, o);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->uuid, uuids[i]);
    EXPECT_EQ(r->blob_path, out);
    const std::string bytes = ReadFileOrDie(out);
    EXPECT_EQ(r->digest, blockstore::Sha256Digest(bytes));
    EXPECT_EQ(r->size, bytes.size());
    EXPECT_TRUE(bytes == ReadFileOrDie(direct[i])) << "layer " << i << " differs";
    EXPECT_GT(ct.compress_end, ct.compress_start);
  }
  // Nothing but the outputs is left beside them.
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir_.path())) {
    EXPECT_EQ(e.path().string().find(".work-"), std::string::npos) << e.path();
    ++files;
  }
  EXPECT_EQ(files, 9u);
  // A file that is not a sealed layer, a bad algorithm: errors, no output.
  EXPECT_FALSE(CompressLayer(dir_.Join("missing"), kUuid0, dir_.Join("x"), Options()).ok());
  auto tar = blockstore::NewMemoryFile(Layer0());
  EXPECT_EQ(ApplyLayer(*tar, {}, kUuid0, "", dir_.Join("y"), Options("zip")).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(std::filesystem::exists(dir_.Join("x")));
  EXPECT_FALSE(std::filesystem::exists(dir_.Join("y")));
}

class LayerConverterFormatTest : public LayerConverterTest,
                                 public ::testing::WithParamInterface<const char*> {};

TEST_P(LayerConverterFormatTest, BlobHasOverlaybdLayout) {
  const std::string algorithm = GetParam();
  std::vector<std::string> blobs = ConvertThree(algorithm);
  ASSERT_EQ(blobs.size(), 3u);
  const char* uuids[] = {kUuid0, kUuid1, kUuid2};
  const char* parents[] = {"00000000-0000-0000-0000-000000000000", kUuid0, kUuid1};
  for (size_t i = 0; i < 3; ++i) {
    auto file = blockstore::OpenLocalFile(blobs[i]);
    ASSERT_TRUE(file.ok()) << file.status();
    auto blob = blockstore::LayerBlob::Open(
        std::shared_ptr<const blockstore::RandomAccessFile>(std::move(*file)));
    ASSERT_TRUE(blob.ok()) << blob.status();
    EXPECT_EQ((*blob)->format(), blockstore::LayerFormat::kBlob);
    EXPECT_EQ((*blob)->entry().name, "overlaybd.commit");
    const blockstore::ZFileReader* z = (*blob)->zfile();
    ASSERT_NE(z, nullptr);
    EXPECT_EQ(z->header().algorithm, algorithm == "zstd" ? blockstore::ZFileAlgorithm::kZstd
                                                         : blockstore::ZFileAlgorithm::kLz4);
    EXPECT_EQ(z->header().block_size, 4096u);
    EXPECT_EQ(z->header().verify, 1);
    // As overlaybd writes it: is_header | data | header carries the trailer | digest.
    EXPECT_EQ(z->header().flags, 0x1bu);
    const blockstore::LsmtHeader& t = (*blob)->layer()->trailer();
    EXPECT_EQ(t.uuid, uuids[i]);
    EXPECT_EQ(t.parent_uuid, parents[i]);
    EXPECT_EQ(t.flags, 0x6u);  // data | sealed, like l0.commit/l1.commit
    EXPECT_EQ(t.user_tag, "");
    EXPECT_EQ(t.virtual_size, kVsize);
  }
  Tree got = StackTree(blobs);
  EXPECT_EQ(testing::TreeDiff(ExpectedTree({Layer0(), Layer1(), Layer2()}), got), "");
}

INSTANTIATE_TEST_SUITE_P(Algorithms, LayerConverterFormatTest, ::testing::Values("lz4", "zstd"));

TEST_F(LayerConverterTest, OptionsAndErrors) {
  LayerConversionOptions o = Options();
  o.algorithm = "gzip";
  auto tar = blockstore::NewMemoryFile(Layer0());
  auto r = ConvertLayer(*tar, {}, kUuid0, "", dir_.Join("x"), o);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  o = Options();
  o.block_size = 5000;
  r = ConvertLayer(*tar, {}, kUuid0, "", dir_.Join("x"), o);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  // A broken tar fails and leaves neither the blob nor the work directory.
  auto bad = blockstore::NewMemoryFile(Layer0().substr(0, 3000) + std::string(600, 'x'));
  r = ConvertLayer(*bad, {}, kUuid0, "", dir_.Join("x"), Options());
  EXPECT_FALSE(r.ok());
  // A missing lower blob.
  r = ConvertLayer(*tar, {dir_.Join("missing")}, kUuid1, kUuid0, dir_.Join("x"), Options());
  EXPECT_FALSE(r.ok());
  std::vector<std::string> left;
  for (const auto& e : std::filesystem::directory_iterator(dir_.path())) {
    left.push_back(e.path().filename().string());
  }
  EXPECT_THAT(left, ::testing::IsEmpty());
  // Larger block size and a zstd level are honoured.
  o = Options("zstd");
  o.block_size = 65536;
  o.level = 9;
  r = ConvertLayer(*tar, {}, kUuid0, "", dir_.Join("big"), o);
  ASSERT_TRUE(r.ok()) << r.status();
  auto f = blockstore::OpenLocalFile(r->blob_path);
  ASSERT_TRUE(f.ok());
  auto blob = blockstore::LayerBlob::Open(
      std::shared_ptr<const blockstore::RandomAccessFile>(std::move(*f)));
  ASSERT_TRUE(blob.ok()) << blob.status();
  EXPECT_EQ((*blob)->zfile()->header().block_size, 65536u);
  EXPECT_EQ((*blob)->zfile()->header().level, 9);
}

TEST(CopyOnWriteBlockDeviceTest, WritesStayInMemory) {
  std::string base(16384, 'b');
  auto file = std::shared_ptr<const blockstore::RandomAccessFile>(blockstore::NewMemoryFile(base));
  auto dev = NewCopyOnWriteBlockDevice(file);
  ASSERT_EQ(dev->Size(), 16384u);
  ASSERT_TRUE(dev->Pwrite(4096 + 512, std::string(1024, 'w')).ok());
  std::string got(16384, '\0');
  ASSERT_TRUE(dev->Pread(0, got.size(), got.data()).ok());
  std::string want = base;
  want.replace(4096 + 512, 1024, std::string(1024, 'w'));
  EXPECT_TRUE(got == want);
  ASSERT_TRUE(dev->Pread(4096, 1024, got.data()).ok());
  EXPECT_EQ(got.substr(0, 1024), std::string(512, 'b') + std::string(512, 'w'));
  std::string orig(16384, '\0');
  ASSERT_TRUE(blockstore::PreadExact(*file, 0, orig.size(), orig.data(), "t").ok());
  EXPECT_TRUE(orig == base);
  EXPECT_FALSE(dev->Pwrite(16384, std::string(512, 'x')).ok());
  EXPECT_FALSE(dev->Pwrite(100, std::string(512, 'x')).ok());
}

// Trees made by overlaybd and by dadi from the same tars hold the same files (inode numbers,
// sizes of directories and link counts may differ between the two mkfs implementations).
Tree Comparable(Tree t) {
  for (auto& [path, n] : t) {
    n.ino = 0;
    n.atime_sec = 0;
    n.atime_nsec = 0;
    if ((n.mode & 0170000) == 0040000) {
      n.size = 0;
      n.nlink = 0;
    }
  }
  return t;
}

TEST_F(LayerConverterTest, MatchesOverlaybdReferenceAndStacksOnItsBlobs) {
  const std::string ref = "tests/data/overlaybd/";
  const std::string tar0 = ReadFileOrDie("tests/converter/data/overlaybd/layer0.tar");
  const std::string tar1 = ReadFileOrDie("tests/converter/data/overlaybd/layer1.tar");
  Tree theirs = StackTree({ref + "l0.commit", ref + "l1.commit"});
  ASSERT_FALSE(theirs.empty());

  LayerConversionOptions o = Options();
  o.vsize = 1 << 30;
  std::vector<std::string> ours;
  ours.push_back(Convert(tar0, {}, "11111111-1111-1111-1111-111111111111", "", "o0", o));
  ours.push_back(Convert(tar1, ours, "22222222-2222-2222-2222-222222222222",
                         "11111111-1111-1111-1111-111111111111", "o1", o));
  EXPECT_EQ(testing::TreeDiff(Comparable(theirs), Comparable(StackTree(ours))), "");

  // dadi's layer 1 on overlaybd's layer 0.
  std::vector<std::string> mixed = {ref + "l0.commit"};
  mixed.push_back(Convert(tar1, mixed, "33333333-3333-3333-3333-333333333333",
                          "11111111-1111-1111-1111-111111111111", "m1", o));
  EXPECT_EQ(testing::TreeDiff(Comparable(theirs), Comparable(StackTree(mixed))), "");
  const std::string image = dir_.Join("mixed.img");
  Export(mixed, image);
  absl::Status fsck = testing::Fsck(image);
  EXPECT_TRUE(fsck.ok()) << fsck;
}

}  // namespace
}  // namespace dadi::converter
