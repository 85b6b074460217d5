// Ext4Filesystem over a file-backed BlockDevice: creation, every kind of file, metadata, sparse
// and >4 GiB files, removal, xattrs; each test ends with e2fsck -fn clean.
#include "converter/ext4_filesystem.h"

#include <sys/stat.h>

#include <cstdio>
#include <string>

#include "converter/block_device.h"
#include "converter/ext2fs_headers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/converter/converter_test_util.h"
#include "tests/support/scratch_dir.h"

namespace dadi::converter {
namespace {

using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;

std::string ReadWholeFile(const std::string& path) {
  std::string out;
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return out;
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) out.append(buf, n);
  std::fclose(f);
  return out;
}

Attr MakeAttr(uint32_t mode, uint32_t uid = 0, uint32_t gid = 0, int64_t sec = 1700000000,
              uint32_t nsec = 0) {
  Attr a;
  a.mode = mode;
  a.uid = uid;
  a.gid = gid;
  a.atime = a.mtime = a.ctime = Timespec{sec, nsec};
  return a;
}

class Ext4FilesystemTest : public ::testing::Test {
 protected:
  void SetUp() override { Make(image_, 256 << 20); }

  void Make(const std::string& path, uint64_t size, Ext4Options options = {}) {
    auto dev = CreateFileBlockDevice(path, size);
    ASSERT_TRUE(dev.ok()) << dev.status();
    dev_ = std::move(*dev);
    options.timestamp = 1600000000;
    auto fs = Ext4Filesystem::Create(dev_.get(), options);
    ASSERT_TRUE(fs.ok()) << fs.status();
    fs_ = std::move(*fs);
  }

  void Reopen() {
    ASSERT_TRUE(fs_->Close().ok());
    fs_.reset();
    auto fs = Ext4Filesystem::Open(dev_.get(), 1600000000);
    ASSERT_TRUE(fs.ok()) << fs.status();
    fs_ = std::move(*fs);
  }

  void CloseAndFsck() {
    ASSERT_TRUE(fs_->Close().ok());
    fs_.reset();
    absl::Status s = testing::Fsck(image_);
    EXPECT_TRUE(s.ok()) << s;
  }

  Ino WriteFile(Ino parent, const std::string& name, const std::string& data,
                uint32_t mode = 0644) {
    auto w = fs_->CreateFile(parent, name, MakeAttr(mode));
    EXPECT_TRUE(w.ok()) << w.status();
    if (!w.ok()) return 0;
    EXPECT_TRUE((*w)->Write(0, data).ok());
    EXPECT_TRUE((*w)->Finish(data.size()).ok());
    return (*w)->ino();
  }

  testing::ScratchDir dir_{"dadi-ext4"};
  std::string image_ = dir_.Join("disk.img");
  std::unique_ptr<BlockDevice> dev_;
  std::unique_ptr<Ext4Filesystem> fs_;
};

TEST_F(Ext4FilesystemTest, FreshFilesystemIsCleanWithOverlaybdFeatures) {
  ext2_filsys raw = fs_->raw();
  EXPECT_TRUE(ext2fs_has_feature_extents(raw->super));
  EXPECT_TRUE(ext2fs_has_feature_64bit(raw->super));
  EXPECT_TRUE(ext2fs_has_feature_dir_index(raw->super));
  EXPECT_TRUE(ext2fs_has_feature_filetype(raw->super));
  EXPECT_TRUE(ext2fs_has_feature_flex_bg(raw->super));
  EXPECT_TRUE(ext2fs_has_feature_sparse_super(raw->super));
  EXPECT_TRUE(ext2fs_has_feature_huge_file(raw->super));
  EXPECT_TRUE(ext2fs_has_feature_dir_nlink(raw->super));
  EXPECT_TRUE(ext2fs_has_feature_extra_isize(raw->super));
  EXPECT_TRUE(ext2fs_has_feature_large_file(raw->super));
  EXPECT_TRUE(ext2fs_has_feature_xattr(raw->super));
  EXPECT_FALSE(ext2fs_has_feature_journal(raw->super));
  EXPECT_EQ(raw->blocksize, 4096u);
  EXPECT_EQ(raw->super->s_inodes_count, (256u << 20) / 16384);
  auto lpf = fs_->LookupPath("lost+found");
  ASSERT_TRUE(lpf.ok());
  auto root = fs_->ReadDir(kRootIno);
  ASSERT_TRUE(root.ok());
  ASSERT_EQ(root->size(), 1u);
  EXPECT_EQ((*root)[0].name, "lost+found");
  CloseAndFsck();
}

TEST_F(Ext4FilesystemTest, CreationIsDeterministicAndTakesUuidFromOptions) {
  ASSERT_TRUE(fs_->Close().ok());
  fs_.reset();
  std::string second = dir_.Join("second.img");
  Make(image_, 64 << 20);
  ASSERT_TRUE(fs_->Close().ok());
  fs_.reset();
  Make(second, 64 << 20);
  ASSERT_TRUE(fs_->Close().ok());
  fs_.reset();
  EXPECT_TRUE(ReadWholeFile(image_) == ReadWholeFile(second));

  std::string third = dir_.Join("third.img");
  Ext4Options o;
  o.uuid[0] = 0x42;
  o.hash_seed[3] = 7;
  Make(third, 64 << 20, o);
  EXPECT_EQ(fs_->raw()->super->s_uuid[0], 0x42);
  EXPECT_EQ(fs_->raw()->super->s_hash_seed[0], 7u << 24);
  ASSERT_TRUE(fs_->Close().ok());
  fs_.reset();
  EXPECT_FALSE(ReadWholeFile(image_) == ReadWholeFile(third));
  EXPECT_TRUE(testing::Fsck(third).ok());
}

TEST_F(Ext4FilesystemTest, EveryKindOfFileSurvivesReopen) {
  auto d = fs_->Mkdir(kRootIno, "etc", MakeAttr(S_IFDIR | 01777, 70000, 80000, 1700000001, 5));
  ASSERT_TRUE(d.ok()) << d.status();
  Ino small = WriteFile(*d, "small", "hello", 04755);
  std::string big(4 * 1024 * 1024 + 12345, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7 + i / 4096);
  Ino large = WriteFile(*d, "large", big);
  ASSERT_NE(WriteFile(*d, "block", std::string(4096, 'b')), 0u);
  ASSERT_NE(WriteFile(*d, "empty", ""), 0u);
  ASSERT_TRUE(fs_->Symlink(*d, "fast", "small", MakeAttr(0777, 1, 2)).ok());
  std::string long_target(300, 'x');
  ASSERT_TRUE(fs_->Symlink(*d, "slow", long_target, MakeAttr(0777)).ok());
  ASSERT_TRUE(fs_->Link(kRootIno, "hard", small).ok());
  Attr chr = MakeAttr(S_IFCHR | 0600);
  chr.rdev_major = 1;
  chr.rdev_minor = 3;
  ASSERT_TRUE(fs_->Mknod(*d, "null", chr).ok());
  Attr blk = MakeAttr(S_IFBLK | 0660);
  blk.rdev_major = 300;
  blk.rdev_minor = 70000;
  ASSERT_TRUE(fs_->Mknod(*d, "blk", blk).ok());
  ASSERT_TRUE(fs_->Mknod(*d, "fifo", MakeAttr(S_IFIFO | 0644)).ok());
  // Times past 2038 and before 1970 use the epoch bits of the extra fields.
  ASSERT_TRUE(fs_->Mknod(*d, "future", MakeAttr(S_IFIFO | 0644, 0, 0, 5000000000, 999999999)).ok());
  ASSERT_TRUE(fs_->Mknod(*d, "past", MakeAttr(S_IFIFO | 0644, 0, 0, -100, 1)).ok());

  auto before = testing::DumpExt4(*fs_);
  ASSERT_TRUE(before.ok()) << before.status();
  Reopen();
  auto after = testing::DumpExt4(*fs_);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(testing::TreeDiff(*before, *after), "");

  const testing::Tree& t = *after;
  EXPECT_EQ(t.at("etc").mode, S_IFDIR | 01777u);
  EXPECT_EQ(t.at("etc").uid, 70000u);
  EXPECT_EQ(t.at("etc").gid, 80000u);
  EXPECT_EQ(t.at("etc").mtime_nsec, 5u);
  EXPECT_EQ(t.at("etc/small").mode, S_IFREG | 04755u);
  EXPECT_EQ(t.at("etc/small").content, "hello");
  EXPECT_EQ(t.at("etc/small").nlink, 2u);
  EXPECT_EQ(t.at("hard").ino, small);
  EXPECT_EQ(t.at("etc/large").content, big);
  EXPECT_EQ(t.at("etc/large").ino, large);
  EXPECT_EQ(t.at("etc/empty").size, 0u);
  EXPECT_EQ(t.at("etc/fast").content, "small");
  EXPECT_EQ(t.at("etc/fast").uid, 1u);
  EXPECT_EQ(t.at("etc/slow").content, long_target);
  EXPECT_EQ(t.at("etc/null").mode, S_IFCHR | 0600u);
  EXPECT_EQ(t.at("etc/null").rdev_major, 1u);
  EXPECT_EQ(t.at("etc/null").rdev_minor, 3u);
  EXPECT_EQ(t.at("etc/blk").rdev_major, 300u);
  EXPECT_EQ(t.at("etc/blk").rdev_minor, 70000u);
  EXPECT_EQ(t.at("etc/fifo").mode, S_IFIFO | 0644u);
  EXPECT_EQ(t.at("etc/future").mtime_sec, 5000000000);
  EXPECT_EQ(t.at("etc/future").mtime_nsec, 999999999u);
  EXPECT_EQ(t.at("etc/past").mtime_sec, -100);
  EXPECT_EQ(t.at("etc/past").mtime_nsec, 1u);
  CloseAndFsck();
}

TEST_F(Ext4FilesystemTest, SparseFileOver4GiB) {
  auto w = fs_->CreateFile(kRootIno, "sparse", MakeAttr(0644));
  ASSERT_TRUE(w.ok()) << w.status();
  std::string head(1 << 20, 'h'), tail(1 << 20, 't');
  const uint64_t far = uint64_t{6} << 30;
  ASSERT_TRUE((*w)->Write(0, head).ok());
  ASSERT_TRUE((*w)->Write(far + 100, tail).ok());
  ASSERT_TRUE((*w)->Finish(uint64_t{7} << 30).ok());
  Ino ino = (*w)->ino();
  Reopen();
  auto a = fs_->GetAttr(ino);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->size, uint64_t{7} << 30);
  // 1 MiB + 1 MiB spanning one extra block; no more than an extent block beyond that.
  EXPECT_GE(a->blocks_512, (2u << 20) / 512);
  EXPECT_LE(a->blocks_512, (2u << 20) / 512 + 16);
  auto hole = fs_->ReadFile(ino, uint64_t{3} << 30, 4096);
  ASSERT_TRUE(hole.ok());
  EXPECT_EQ(*hole, std::string(4096, '\0'));
  auto data = fs_->ReadFile(ino, far, 200);
  ASSERT_TRUE(data.ok());
  EXPECT_EQ(*data, std::string(100, '\0') + std::string(100, 't'));
  auto end = fs_->ReadFile(ino, (uint64_t{7} << 30) - 10, 100);
  ASSERT_TRUE(end.ok());
  EXPECT_EQ(*end, std::string(10, '\0'));
  CloseAndFsck();
}

TEST_F(Ext4FilesystemTest, SmallGapsInsideABlockAreZeroFilled) {
  auto w = fs_->CreateFile(kRootIno, "f", MakeAttr(0644));
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->Write(0, "ab").ok());
  ASSERT_TRUE((*w)->Write(10, "cd").ok());
  ASSERT_TRUE((*w)->Write(9000, "ef").ok());
  EXPECT_FALSE((*w)->Write(5, "zz").ok());  // backwards
  EXPECT_FALSE((*w)->Finish(100).ok());     // below the data
  Ino ino = (*w)->ino();
  w->reset();  // abandoned: what was accepted is still consistent
  auto data = fs_->ReadFile(ino, 0, 20000);
  ASSERT_TRUE(data.ok());
  std::string want(9002, '\0');
  want.replace(0, 2, "ab");
  want.replace(10, 2, "cd");
  want.replace(9000, 2, "ef");
  EXPECT_EQ(*data, want.substr(0, data->size()));
  CloseAndFsck();
}

TEST_F(Ext4FilesystemTest, XattrsInInodeAndInBlock) {
  Ino f = WriteFile(kRootIno, "f", "x");
  std::string cap(
      "\x01\x00\x00\x02\x00\x30\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", 20);
  std::string big(2000, 'v');
  ASSERT_TRUE(
      fs_->SetXattrs(f, {{"security.capability", cap}, {"user.small", "1"}, {"trusted.big", big}})
          .ok());
  ASSERT_TRUE(fs_->SetXattrs(f, {{"user.small", "2"}}).ok());  // replaces
  Reopen();
  auto x = fs_->GetXattrs(f);
  ASSERT_TRUE(x.ok()) << x.status();
  EXPECT_THAT(*x, UnorderedElementsAre(Xattr{"security.capability", cap}, Xattr{"user.small", "2"},
                                       Xattr{"trusted.big", big}));
  CloseAndFsck();
}

TEST_F(Ext4FilesystemTest, RemovingATreeFreesBlocksAndInodes) {
  ASSERT_TRUE(fs_->Flush().ok());
  const uint64_t free_blocks = fs_->free_blocks();
  const uint32_t free_inodes = fs_->raw()->super->s_free_inodes_count;
  const uint32_t root_links = fs_->GetAttr(kRootIno)->nlink;

  auto top = fs_->MkdirAll("top/a/b/c", MakeAttr(S_IFDIR | 0755));
  ASSERT_TRUE(top.ok());
  auto a = fs_->LookupPath("top/a");
  ASSERT_TRUE(a.ok());
  for (int i = 0; i < 300; ++i) {
    Ino f = WriteFile(*a, "file" + std::to_string(i), std::string(i * 100, 'z'));
    ASSERT_NE(f, 0u);
    if (i % 50 == 0) {
      ASSERT_TRUE(fs_->SetXattrs(f, {{"user.big", std::string(3000, 'q')}}).ok());
    }
  }
  Ino keep = WriteFile(kRootIno, "keep", "k");
  ASSERT_TRUE(fs_->Link(*top, "link-to-keep", keep).ok());
  ASSERT_TRUE(fs_->Symlink(*top, "slow", std::string(200, 's'), MakeAttr(0777)).ok());
  ASSERT_TRUE(WriteFile(*top, "big", std::string(9 << 20, 'B')) != 0);

  ASSERT_TRUE(fs_->Remove(kRootIno, "top").ok());
  ASSERT_TRUE(fs_->Remove(kRootIno, "keep").ok());
  EXPECT_EQ(fs_->free_blocks(), free_blocks);
  EXPECT_EQ(fs_->raw()->super->s_free_inodes_count, free_inodes);
  EXPECT_EQ(fs_->GetAttr(kRootIno)->nlink, root_links);
  EXPECT_EQ(fs_->Remove(kRootIno, "top").code(), absl::StatusCode::kNotFound);
  CloseAndFsck();
}

TEST_F(Ext4FilesystemTest, RemoveChildrenInOnePass) {
  ASSERT_TRUE(fs_->Flush().ok());
  const uint64_t free_blocks = fs_->free_blocks();
  auto d = fs_->Mkdir(kRootIno, "d", MakeAttr(S_IFDIR | 0755));
  ASSERT_TRUE(d.ok());
  for (int i = 0; i < 600; ++i) {
    std::string name = "entry-" + std::to_string(i);
    if (i % 3 == 0) {
      auto sub = fs_->Mkdir(*d, name, MakeAttr(S_IFDIR | 0755));
      ASSERT_TRUE(sub.ok());
      ASSERT_NE(WriteFile(*sub, "inner", std::string(5000, 'i')), 0u);
    } else {
      ASSERT_NE(WriteFile(*d, name, std::string(i, 'f')), 0u);
    }
  }
  EXPECT_EQ(fs_->GetAttr(*d)->nlink, 2u + 200);
  auto removed = fs_->RemoveChildren(
      *d, [](const DirEntry& e) { return std::stoi(e.name.substr(6)) % 2 == 1; });
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(removed->size(), 300u);
  auto left = fs_->ReadDir(*d);
  ASSERT_TRUE(left.ok());
  EXPECT_EQ(left->size(), 300u);
  for (const DirEntry& e : *left) EXPECT_EQ(std::stoi(e.name.substr(6)) % 2, 0) << e.name;
  EXPECT_EQ(fs_->GetAttr(*d)->nlink, 2u + 100);
  // Lookups see the change (the directory is large enough to be indexed).
  EXPECT_EQ(*fs_->LookupChild(*d, "entry-1"), 0u);
  EXPECT_NE(*fs_->LookupChild(*d, "entry-2"), 0u);
  ASSERT_NE(WriteFile(*d, "entry-1", "again"), 0u);
  EXPECT_NE(*fs_->LookupChild(*d, "entry-1"), 0u);
  ASSERT_TRUE(fs_->Remove(kRootIno, "d").ok());
  EXPECT_EQ(fs_->free_blocks(), free_blocks);
  CloseAndFsck();
}

TEST_F(Ext4FilesystemTest, HardLinkCountsAndDirectoryRules) {
  Ino f = WriteFile(kRootIno, "f", "data");
  ASSERT_TRUE(fs_->Link(kRootIno, "g", f).ok());
  ASSERT_TRUE(fs_->Link(kRootIno, "h", f).ok());
  EXPECT_EQ(fs_->GetAttr(f)->nlink, 3u);
  ASSERT_TRUE(fs_->Remove(kRootIno, "f").ok());
  EXPECT_EQ(fs_->GetAttr(f)->nlink, 2u);
  auto d = fs_->Mkdir(kRootIno, "d", MakeAttr(S_IFDIR | 0755));
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(fs_->Link(kRootIno, "dlink", *d).ok());
  EXPECT_FALSE(fs_->Mkdir(kRootIno, "..", MakeAttr(S_IFDIR | 0755)).ok());
  EXPECT_FALSE(fs_->Mkdir(kRootIno, "a/b", MakeAttr(S_IFDIR | 0755)).ok());
  EXPECT_FALSE(fs_->Symlink(kRootIno, "s", "", MakeAttr(0777)).ok());
  CloseAndFsck();
}

TEST_F(Ext4FilesystemTest, FullDeviceFailsCleanly) {
  fs_.reset();
  Make(image_, 16 << 20);
  auto w = fs_->CreateFile(kRootIno, "huge", MakeAttr(0644));
  ASSERT_TRUE(w.ok());
  std::string chunk(1 << 20, 'x');
  absl::Status s;
  for (int i = 0; i < 32 && s.ok(); ++i) s = (*w)->Write(uint64_t(i) << 20, chunk);
  if (s.ok()) s = (*w)->Finish(32 << 20);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  w->reset();
  CloseAndFsck();
}

TEST_F(Ext4FilesystemTest, OpenRejectsGarbage) {
  fs_.reset();
  auto dev = CreateFileBlockDevice(dir_.Join("zero.img"), 16 << 20);
  ASSERT_TRUE(dev.ok());
  auto fs = Ext4Filesystem::Open(dev->get());
  EXPECT_FALSE(fs.ok());
  EXPECT_THAT(fs.status().message(), HasSubstr("zero.img"));
}

}  // namespace
}  // namespace dadi::converter
