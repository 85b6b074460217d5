// Tar layers (made here with libarchive's writer) applied to ext4 with containerd's semantics.
// Every test checks e2fsck -fn and the tree read back; the mount test compares with what the
// kernel sees.
#include "converter/tar_applier.h"

#include <sys/stat.h>

#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "blockstore/file/file.h"
#include "converter/block_device.h"
#include "converter/ext4_filesystem.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/converter/converter_test_util.h"
#include "tests/support/scratch_dir.h"

namespace dadi::converter {
namespace {

using ::testing::HasSubstr;
using testing::TarBuilder;
using testing::Tree;

class TarApplierTest : public ::testing::Test {
 protected:
  void SetUp() override { Make(image_); }

  void Make(const std::string& path, uint64_t size = 128 << 20) {
    auto dev = CreateFileBlockDevice(path, size);
    ASSERT_TRUE(dev.ok()) << dev.status();
    dev_ = std::move(*dev);
    Ext4Options o;
    o.timestamp = 1600000000;
    auto fs = Ext4Filesystem::Create(dev_.get(), o);
    ASSERT_TRUE(fs.ok()) << fs.status();
    fs_ = std::move(*fs);
  }

  absl::StatusOr<ApplyStats> Apply(const std::string& tar, const std::string& name = "L") {
    auto file = blockstore::NewMemoryFile(tar, name);
    ApplyOptions o;
    o.layer_name = name;
    o.default_time = 1234;
    return ApplyTarFile(*fs_, *file, o);
  }

  void MustApply(const std::string& tar, const std::string& name = "L") {
    auto s = Apply(tar, name);
    ASSERT_TRUE(s.ok()) << s.status();
  }

  Tree Dump() {
    auto t = testing::DumpExt4(*fs_);
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? *t : Tree{};
  }

  std::vector<std::string> Paths() {
    std::vector<std::string> out;
    for (const auto& [p, n] : Dump()) out.push_back(p);
    return out;
  }

  void CloseAndFsck() {
    ASSERT_TRUE(fs_->Close().ok());
    fs_.reset();
    absl::Status s = testing::Fsck(image_);
    EXPECT_TRUE(s.ok()) << s;
  }

  testing::ScratchDir dir_{"dadi-tar"};
  std::string image_ = dir_.Join("disk.img");
  std::unique_ptr<BlockDevice> dev_;
  std::unique_ptr<Ext4Filesystem> fs_;
};

TarBuilder::Meta M(uint32_t mode, uint32_t uid = 0, uint32_t gid = 0, int64_t mtime = 1700000000,
                   long nsec = 0) {
  TarBuilder::Meta m;
  m.mode = mode;
  m.uid = uid;
  m.gid = gid;
  m.mtime = mtime;
  m.mtime_nsec = nsec;
  return m;
}

TEST_F(TarApplierTest, EveryEntryKindWithMetadata) {
  TarBuilder::Meta xm = M(0755, 1000, 1001, 1700000123, 456789);
  xm.xattrs = {{"security.capability",
                std::string("\x01\x00\x00\x02\x00\x20\x00\x00", 8) + std::string(12, '\0')},
               {"user.note", "hello"},
               {"trusted.t", "x"}};
  TarBuilder tb;
  tb.Dir("./", M(0755))
      .Dir("bin/", M(0755))
      .File("bin/tool", "#!/bin/sh\necho hi\n", xm)
      .File("bin/su", "suid", M(04755))
      .File("bin/sg", "sgid", M(02711))
      .Dir("tmp/", M(01777))
      .Symlink("bin/sh", "tool")
      .Symlink("bin/long", std::string(200, 'l'))
      .Hardlink("bin/tool2", "bin/tool")
      .Device("dev/null", false, 1, 3, M(0666))
      .Device("dev/sda", true, 8, 0, M(0660, 0, 6))
      .Fifo("run/fifo", M(0600));
  auto stats = Apply(tb.Finish());
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->entries, 12u);
  EXPECT_EQ(stats->file_bytes, 18u + 4 + 4);

  Tree t = Dump();
  EXPECT_EQ(t.at("bin/tool").content, "#!/bin/sh\necho hi\n");
  EXPECT_EQ(t.at("bin/tool").mode, S_IFREG | 0755u);
  EXPECT_EQ(t.at("bin/tool").uid, 1000u);
  EXPECT_EQ(t.at("bin/tool").gid, 1001u);
  EXPECT_EQ(t.at("bin/tool").mtime_sec, 1700000123);
  EXPECT_EQ(t.at("bin/tool").mtime_nsec, 456789u);
  EXPECT_EQ(t.at("bin/tool").nlink, 2u);
  EXPECT_EQ(t.at("bin/tool2").ino, t.at("bin/tool").ino);
  EXPECT_EQ(t.at("bin/tool").xattrs.size(), 3u);
  EXPECT_EQ(t.at("bin/su").mode, S_IFREG | 04755u);
  EXPECT_EQ(t.at("bin/sg").mode, S_IFREG | 02711u);
  EXPECT_EQ(t.at("tmp").mode, S_IFDIR | 01777u);
  EXPECT_EQ(t.at("bin/sh").mode & S_IFMT, unsigned(S_IFLNK));
  EXPECT_EQ(t.at("bin/sh").content, "tool");
  EXPECT_EQ(t.at("bin/long").content, std::string(200, 'l'));
  EXPECT_EQ(t.at("dev/null").mode, S_IFCHR | 0666u);
  EXPECT_EQ(t.at("dev/null").rdev_major, 1u);
  EXPECT_EQ(t.at("dev/null").rdev_minor, 3u);
  EXPECT_EQ(t.at("dev/sda").mode, S_IFBLK | 0660u);
  EXPECT_EQ(t.at("dev/sda").gid, 6u);
  EXPECT_EQ(t.at("run/fifo").mode, S_IFIFO | 0600u);
  // Parents the tar implies get 0755 and the default time.
  EXPECT_EQ(t.at("dev").mode, S_IFDIR | 0755u);
  EXPECT_EQ(t.at("dev").mtime_sec, 1234);
  CloseAndFsck();
}

TEST_F(TarApplierTest, CompressionIsDetected) {
  auto layer = [](TarBuilder::Compression c) {
    TarBuilder tb(TarBuilder::Format::kPax, c);
    tb.File("a/b", std::string(100000, 'q')).Symlink("a/c", "b");
    return tb.Finish();
  };
  std::string gz = layer(TarBuilder::Compression::kGzip);
  std::string zst = layer(TarBuilder::Compression::kZstd);
  ASSERT_EQ(gz.substr(0, 2), "\x1f\x8b");
  ASSERT_EQ(zst.substr(0, 4), "\x28\xb5\x2f\xfd");
  MustApply(gz);
  Tree from_gzip = Dump();
  MustApply(zst);
  Tree from_zstd = Dump();
  MustApply(layer(TarBuilder::Compression::kNone));
  Tree from_plain = Dump();
  EXPECT_EQ(from_gzip.at("a/b").content, std::string(100000, 'q'));
  // Each apply replaces the files (new inodes); content and metadata are the same.
  for (Tree* t : {&from_gzip, &from_zstd, &from_plain}) {
    for (auto& [p, n] : *t) n.ino = 0;
  }
  EXPECT_EQ(testing::TreeDiff(from_gzip, from_zstd), "");
  EXPECT_EQ(testing::TreeDiff(from_gzip, from_plain), "");
  // Empty layers: zero bytes, and an empty gzip member (header, empty deflate block, trailer).
  const std::string empty_gzip("\x1f\x8b\x08\0\0\0\0\0\0\x03\x03\0\0\0\0\0\0\0\0\0", 20);
  auto none = Apply("", "zero-bytes");
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(none->entries, 0u);
  auto empty = Apply(empty_gzip, "empty.gz");
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ(empty->entries, 0u);
  EXPECT_EQ(Dump().at("a/b").content, std::string(100000, 'q'));
  CloseAndFsck();
}

TEST_F(TarApplierTest, LongNamesGnuAndPax) {
  std::string deep;
  for (int i = 0; i < 12; ++i) deep += std::string(40, 'a' + i) + "/";
  std::string name = deep + std::string(200, 'z');
  for (auto format : {TarBuilder::Format::kGnu, TarBuilder::Format::kPax}) {
    TarBuilder tb(format);
    tb.File(name, "deep").Symlink("s", name).Hardlink("h", name);
    MustApply(tb.Finish());
    Tree t = Dump();
    ASSERT_TRUE(t.contains(name));
    EXPECT_EQ(t.at(name).content, "deep");
    EXPECT_EQ(t.at("s").content, name);
    EXPECT_EQ(t.at("h").ino, t.at(name).ino);
  }
  CloseAndFsck();
}

TEST_F(TarApplierTest, SparseEntriesKeepTheirHoles) {
  const uint64_t size = 48 << 20;
  std::string a(10000, 'a'), b(5000, 'b');
  TarBuilder tb;
  tb.SparseFile("sparse", size, {{4096, a}, {40 << 20, b}});
  std::string tar = tb.Finish();
  ASSERT_LT(tar.size(), size_t(1 << 20));  // the holes are not in the tar
  MustApply(tar);
  auto ino = fs_->LookupPath("sparse");
  ASSERT_TRUE(ino.ok());
  auto attr = fs_->GetAttr(*ino);
  ASSERT_TRUE(attr.ok());
  EXPECT_EQ(attr->size, size);
  EXPECT_LE(attr->blocks_512, 64u);  // 3 + 2 data blocks, nothing for the holes
  EXPECT_EQ(*fs_->ReadFile(*ino, 0, 4096), std::string(4096, '\0'));
  EXPECT_EQ(*fs_->ReadFile(*ino, 4096, a.size()), a);
  EXPECT_EQ(*fs_->ReadFile(*ino, 20 << 20, 100), std::string(100, '\0'));
  EXPECT_EQ(*fs_->ReadFile(*ino, 40 << 20, b.size() + 10), b + std::string(10, '\0'));
  CloseAndFsck();
}

TEST_F(TarApplierTest, WhiteoutsRemoveLowerEntries) {
  TarBuilder l1;
  l1.File("a/b", "1").File("a/c", "2").Dir("d/e/f").File("d/e/f/g", "3").File("top", "4");
  MustApply(l1.Finish(), "L1");
  TarBuilder l2;
  l2.Whiteout("a/b").Whiteout("d").Whiteout("missing").Whiteout("a/nothere");
  auto s = Apply(l2.Finish(), "L2");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->whiteouts, 4u);
  EXPECT_THAT(Paths(), ::testing::ElementsAre("a", "a/c", "top"));
  CloseAndFsck();
}

TEST_F(TarApplierTest, OpaqueDirectoryKeepsOnlyThisLayersEntries) {
  TarBuilder l1;
  l1.File("o1/old", "x").Dir("o1/sub").File("o1/sub/deep", "y").File("o2/old", "x");
  l1.File("o3/old", "x").File("o3/keepdir/old", "x").File("other/f", "f");
  MustApply(l1.Finish(), "L1");
  TarBuilder l2;
  // Marker first (the usual order), marker last (must not remove this layer's entries), and a
  // directory this layer re-declares: kept, but its lower children go.
  l2.Opaque("o1").File("o1/new", "n");
  l2.File("o2/new", "n").Dir("o2/newdir").File("o2/newdir/f", "f").Opaque("o2");
  l2.Dir("o3/keepdir").Opaque("o3");
  MustApply(l2.Finish(), "L2");
  EXPECT_THAT(Paths(),
              ::testing::ElementsAre("o1", "o1/new", "o2", "o2/new", "o2/newdir", "o2/newdir/f",
                                     "o3", "o3/keepdir", "other", "other/f"));
  CloseAndFsck();
}

TEST_F(TarApplierTest, EntriesReplaceWhateverIsAtTheirPath) {
  TarBuilder l1;
  l1.File("p", "file").Dir("q", M(0700, 5, 5)).File("q/child", "c").Symlink("r", "p");
  MustApply(l1.Finish(), "L1");
  TarBuilder l2;
  l2.Dir("p", M(0711)).File("p/inside", "i").Dir("q", M(0750, 7, 8)).File("r", "now a file");
  MustApply(l2.Finish(), "L2");
  Tree t = Dump();
  EXPECT_EQ(t.at("p").mode, S_IFDIR | 0711u);
  EXPECT_EQ(t.at("p/inside").content, "i");
  // Directory over directory: merged, metadata from the new layer.
  EXPECT_EQ(t.at("q").mode, S_IFDIR | 0750u);
  EXPECT_EQ(t.at("q").uid, 7u);
  EXPECT_EQ(t.at("q/child").content, "c");
  EXPECT_EQ(t.at("r").mode & S_IFMT, unsigned(S_IFREG));
  TarBuilder l3;
  l3.File("p", "file again").Symlink("q", "p");
  MustApply(l3.Finish(), "L3");
  EXPECT_THAT(Paths(), ::testing::ElementsAre("p", "q", "r"));
  t = Dump();
  EXPECT_EQ(t.at("p").content, "file again");
  EXPECT_EQ(t.at("q").content, "p");
  CloseAndFsck();
}

TEST_F(TarApplierTest, PathsAreConfinedToTheRoot) {
  TarBuilder l1;
  l1.File("../../etc/passwd", "p").File("/abs/file", "a").File("x/../../../y", "y");
  l1.File("./././z//w", "w");
  l1.Dir("usr/lib").Symlink("lib", "usr/lib").Symlink("up", "../../../../usr");
  l1.Symlink("absl", "/usr/lib");
  MustApply(l1.Finish(), "L1");
  TarBuilder l2;
  // Parent symlinks are followed, never out of the root.
  l2.File("lib/libc.so", "c").File("up/lib/viaup", "u").File("absl/viaabs", "v");
  MustApply(l2.Finish(), "L2");
  EXPECT_THAT(Paths(), ::testing::ElementsAre("abs", "abs/file", "absl", "etc", "etc/passwd", "lib",
                                              "up", "usr", "usr/lib", "usr/lib/libc.so",
                                              "usr/lib/viaabs", "usr/lib/viaup", "y", "z", "z/w"));
  CloseAndFsck();
}

TEST_F(TarApplierTest, HardLinksToLowerLayersAndReplacedTargets) {
  TarBuilder l1;
  l1.File("lower", "L", M(0640, 3, 4));
  MustApply(l1.Finish(), "L1");
  TarBuilder l2;
  l2.Hardlink("up/link", "lower").File("new", "N").Hardlink("new2", "./new");
  MustApply(l2.Finish(), "L2");
  Tree t = Dump();
  EXPECT_EQ(t.at("up/link").ino, t.at("lower").ino);
  EXPECT_EQ(t.at("lower").nlink, 2u);
  EXPECT_EQ(t.at("up/link").uid, 3u);
  EXPECT_EQ(t.at("new2").ino, t.at("new").ino);
  TarBuilder l3;
  l3.Whiteout("lower");
  MustApply(l3.Finish(), "L3");
  t = Dump();
  EXPECT_EQ(t.at("up/link").nlink, 1u);
  EXPECT_EQ(t.at("up/link").content, "L");
  CloseAndFsck();
}

TEST_F(TarApplierTest, BadInputFailsWithLayerAndEntry) {
  TarBuilder good_gz(TarBuilder::Format::kPax, TarBuilder::Compression::kGzip);
  good_gz.File("a", std::string(300000, 'a')).File("b", std::string(300000, 'b'));
  std::string gz = good_gz.Finish();
  auto truncated = Apply(gz.substr(0, gz.size() / 2), "truncated.tgz");
  ASSERT_FALSE(truncated.ok());
  EXPECT_THAT(truncated.status().message(), HasSubstr("truncated.tgz"));

  TarBuilder plain;
  plain.File("first", "1").File("second", "2");
  std::string tar = plain.Finish();
  // Damage the second header's checksum field (offset 148 of its 512-byte header).
  size_t second = tar.find("second");
  ASSERT_NE(second, std::string::npos);
  std::string corrupt = tar;
  corrupt[second - second % 512 + 148] ^= 0x55;
  auto bad = Apply(corrupt, "corrupt.tar");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("corrupt.tar"));
  EXPECT_THAT(bad.status().message(), HasSubstr("first")) << bad.status();

  EXPECT_FALSE(Apply(std::string(5000, '\x42'), "garbage").ok());

  TarBuilder missing;
  missing.Hardlink("link", "no/such/file");
  auto m = Apply(missing.Finish(), "missing.tar");
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(m.status().message(), HasSubstr("\"link\""));
  EXPECT_THAT(m.status().message(), HasSubstr("no/such/file"));

  TarBuilder escape;
  escape.File("d/.wh..", "");
  auto e = Apply(escape.Finish(), "wh.tar");
  ASSERT_FALSE(e.ok());
  EXPECT_THAT(e.status().message(), HasSubstr("whiteout"));

  TarBuilder notdir;
  notdir.File("f", "x").File("f/child", "y");
  auto nd = Apply(notdir.Finish(), "notdir.tar");
  ASSERT_FALSE(nd.ok());
  EXPECT_THAT(nd.status().message(), HasSubstr("f/child"));

  TarBuilder longname;
  longname.File(std::string(300, 'n'), "x");
  EXPECT_FALSE(Apply(longname.Finish(), "longname.tar").ok());

  // Whatever failed, the file system stays consistent.
  CloseAndFsck();
}

TEST_F(TarApplierTest, FileLargerThanTheDeviceIsRejectedBeforeWriting) {
  // A ustar header claiming 1 GiB of data on a 128 MiB file system.
  TarBuilder tb(TarBuilder::Format::kPax);
  tb.File("small", "s");
  std::string tar = tb.Finish();
  std::string header(512, '\0');
  std::snprintf(header.data(), 100, "%s", "huge");
  std::snprintf(header.data() + 100, 8, "%07o", 0644);
  std::snprintf(header.data() + 108, 8, "%07o", 0);
  std::snprintf(header.data() + 116, 8, "%07o", 0);
  std::snprintf(header.data() + 124, 12, "%011llo", 1ULL << 30);
  std::snprintf(header.data() + 136, 12, "%011o", 0);
  header[156] = '0';
  std::memcpy(header.data() + 257,
              "ustar\0"
              "00",
              8);
  std::memset(header.data() + 148, ' ', 8);
  unsigned sum = 0;
  for (unsigned char c : header) sum += c;
  std::snprintf(header.data() + 148, 8, "%06o", sum);
  header[155] = ' ';
  auto s = Apply(header + std::string(4096, '\0'), "huge.tar");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kResourceExhausted) << s.status();
  EXPECT_THAT(s.status().message(), HasSubstr("huge"));
  CloseAndFsck();
}

TEST_F(TarApplierTest, TenThousandFilesInOneDirectory) {
  fs_.reset();
  Make(image_, 256 << 20);  // 16384 inodes
  TarBuilder tb;
  const int n = 10000;
  for (int i = 0; i < n; ++i) tb.File("many/file-" + std::to_string(i), std::to_string(i));
  MustApply(tb.Finish());
  auto dir = fs_->LookupPath("many");
  ASSERT_TRUE(dir.ok());
  auto entries = fs_->ReadDir(*dir);
  ASSERT_TRUE(entries.ok());
  EXPECT_EQ(entries->size(), size_t(n));
  auto f = fs_->LookupPath("many/file-9999");
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(*fs_->ReadFile(*f, 0, 100), "9999");
  TarBuilder wipe;
  wipe.Opaque("many").File("many/only", "1");
  MustApply(wipe.Finish());
  EXPECT_EQ(fs_->ReadDir(*dir)->size(), 1u);
  CloseAndFsck();
}

// Counts what reaches the device below.
class CountingDevice : public BlockDevice {
 public:
  explicit CountingDevice(BlockDevice* base) : base_(base) {}
  uint64_t Size() const override { return base_->Size(); }
  absl::Status Pread(uint64_t offset, size_t n, char* buf) override {
    return base_->Pread(offset, n, buf);
  }
  absl::Status Pwrite(uint64_t offset, absl::string_view data) override {
    written_ += data.size();
    ++writes_;
    return base_->Pwrite(offset, data);
  }
  absl::Status Flush() override { return base_->Flush(); }
  std::string Name() const override { return base_->Name(); }
  uint64_t written_ = 0;
  uint64_t writes_ = 0;

 private:
  BlockDevice* base_;
};

TEST_F(TarApplierTest, UpperLayerWritesOnlyWhatChanged) {
  // A lower layer with some content on a 1 GiB device...
  fs_.reset();
  Make(image_, 1 << 30);
  TarBuilder l1;
  for (int i = 0; i < 200; ++i) l1.File("usr/lib/f" + std::to_string(i), std::string(3000, 'x'));
  MustApply(l1.Finish(), "L1");
  ASSERT_TRUE(fs_->Close().ok());
  fs_.reset();
  // ... then a layer adding one small file, through a counting device.
  CountingDevice counting(dev_.get());
  auto fs = Ext4Filesystem::Open(&counting, 1600000000);
  ASSERT_TRUE(fs.ok()) << fs.status();
  fs_ = std::move(*fs);
  TarBuilder l2;
  l2.File("usr/lib/new", "n");
  MustApply(l2.Finish(), "L2");
  ASSERT_TRUE(fs_->Close().ok());
  fs_.reset();
  // Superblock, a descriptor block, two bitmap blocks, an inode-table block, the directory
  // block, the data block: a handful of 4 KiB blocks, not the 32 MiB of bitmaps and tables.
  EXPECT_LE(counting.written_, 12u * 4096) << counting.writes_ << " writes";
  EXPECT_GT(counting.written_, 0u);
  absl::Status s = testing::Fsck(image_);
  EXPECT_TRUE(s.ok()) << s;
}

std::vector<std::string> ThreeLayers() {
  std::vector<std::string> layers;
  TarBuilder l1(TarBuilder::Format::kPax, TarBuilder::Compression::kGzip);
  TarBuilder::Meta x = M(0755, 0, 0, 1700000000, 123456789);
  // A valid VFS_CAP_REVISION_2 (the kernel checks it on read): cap_net_bind_service, effective.
  x.xattrs = {{"user.k", "v"},
              {"security.capability",
               std::string("\x01\x00\x00\x02\x00\x04\x00\x00", 8) + std::string(12, '\0')}};
  l1.Dir("etc")
      .File("etc/hosts", "127.0.0.1 localhost\n")
      .File("bin/app", std::string(70000, 'A'), x);
  l1.Symlink("bin/link", "app").Dir("var/lib/data", M(0700, 999, 999));
  l1.File("var/lib/data/db", std::string(5 << 20, 'D'), M(0600, 999, 999));
  l1.Device("dev/zero", false, 1, 5, M(0666)).Fifo("dev/pipe");
  l1.File("bin/big", std::string(9 << 20, 'B'));
  l1.SparseFile("var/sparse", 8 << 20, {{4096, std::string(9000, 's')}, {6 << 20, "tail"}});
  layers.push_back(l1.Finish());
  TarBuilder l2(TarBuilder::Format::kGnu, TarBuilder::Compression::kZstd);
  l2.Whiteout("etc/hosts").File("etc/hostname", "box\n").Hardlink("bin/app2", "bin/app");
  l2.Opaque("var/lib/data").File("var/lib/data/new", "new").Dir("bin/big", M(0755));
  l2.File("bin/big/inside", "i");
  layers.push_back(l2.Finish());
  TarBuilder l3;
  l3.File("bin/big", "small again").Symlink("etc/hosts", "hostname").Whiteout("dev/pipe");
  layers.push_back(l3.Finish());
  return layers;
}

TEST_F(TarApplierTest, OutputIsByteIdenticalAcrossRuns) {
  auto run = [&](const std::string& image) {
    Make(image, 64 << 20);
    int i = 0;
    for (const std::string& layer : ThreeLayers()) MustApply(layer, absl::StrCat("L", ++i));
    ASSERT_TRUE(fs_->Close().ok());
    fs_.reset();
  };
  fs_.reset();
  std::string a = dir_.Join("a.img"), b = dir_.Join("b.img");
  run(a);
  run(b);
  auto read = [](const std::string& p) {
    std::string out;
    FILE* f = std::fopen(p.c_str(), "rb");
    char buf[1 << 16];
    size_t n;
    while (f != nullptr && (n = std::fread(buf, 1, sizeof(buf), f)) > 0) out.append(buf, n);
    if (f != nullptr) std::fclose(f);
    return out;
  };
  std::string da = read(a), db = read(b);
  ASSERT_EQ(da.size(), size_t(64 << 20));
  EXPECT_TRUE(da == db);
  EXPECT_TRUE(testing::Fsck(a).ok());
}

TEST_F(TarApplierTest, KernelMountSeesTheSameTree) {
  int i = 0;
  for (const std::string& layer : ThreeLayers()) MustApply(layer, absl::StrCat("L", ++i));
  Tree ours = Dump();
  EXPECT_EQ(ours.at("etc/hosts").content, "hostname");
  EXPECT_EQ(ours.at("bin/big").content, "small again");
  EXPECT_FALSE(ours.contains("var/lib/data/db"));
  EXPECT_FALSE(ours.contains("dev/pipe"));
  EXPECT_EQ(ours.at("bin/app2").ino, ours.at("bin/app").ino);
  CloseAndFsck();

  std::string mnt = dir_.Join("mnt");
  ASSERT_EQ(::mkdir(mnt.c_str(), 0755), 0);
  auto mount = testing::LoopMount::Mount(image_, mnt);
  if (!mount.ok() && mount.status().code() == absl::StatusCode::kUnavailable) {
    GTEST_SKIP() << "no loop devices: " << mount.status();
  }
  ASSERT_TRUE(mount.ok()) << mount.status();
  auto kernel = testing::DumpDir(mnt);
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  EXPECT_EQ(testing::TreeDiff(ours, *kernel), "");
}

}  // namespace
}  // namespace dadi::converter
