// An ext4 made by mkfs.ext4 goes through the whole format path — written into a writable layer
// (zero blocks skipped, as a converter does), committed, compressed, wrapped as a blob, reopened
// through a stack over an empty base layer — and the exported image must be byte-identical and
// mount through a loop device with the same files. Needs root and /dev/loop-control.
#include <fcntl.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "blockstore/blob/layer_blob.h"
#include "blockstore/file/unique_fd.h"
#include "blockstore/lsmt/layer_stack.h"
#include "blockstore/lsmt/sealed_layer_writer.h"
#include "blockstore/lsmt/writable_layer.h"
#include "blockstore/zfile/zfile_writer.h"
#include "gtest/gtest.h"
#include "tests/blockstore/test_util.h"
#include "tests/support/scratch_dir.h"

namespace dadi::blockstore {
namespace {

constexpr uint64_t kImageSize = 64 << 20;

// Runs argv, returns its exit status (stdout/stderr to the test log).
int RunCommand(const std::vector<std::string>& argv) {
  pid_t pid = ::fork();
  if (pid == 0) {
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// A loop device bound to a file, read-only; detached on destruction.
class LoopDevice {
 public:
  static absl::StatusOr<std::unique_ptr<LoopDevice>> Attach(const std::string& file) {
    UniqueFd ctl(::open("/dev/loop-control", O_RDWR | O_CLOEXEC));
    if (!ctl.valid()) return absl::UnavailableError("open /dev/loop-control");
    UniqueFd backing(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
    if (!backing.valid()) return absl::InternalError("open backing file");
    for (int attempt = 0; attempt < 10; ++attempt) {
      int n = ::ioctl(ctl.get(), LOOP_CTL_GET_FREE);
      if (n < 0) return absl::UnavailableError("LOOP_CTL_GET_FREE");
      std::string path = "/dev/loop" + std::to_string(n);
      struct stat st;
      if (::stat(path.c_str(), &st) != 0) ::mknod(path.c_str(), S_IFBLK | 0600, makedev(7, n));
      UniqueFd dev(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
      if (!dev.valid()) continue;
      if (::ioctl(dev.get(), LOOP_SET_FD, backing.get()) != 0) continue;  // raced: try another
      std::unique_ptr<LoopDevice> loop(new LoopDevice(std::move(dev), path));
      struct loop_info64 info = {};
      info.lo_flags = LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR;
      ::ioctl(loop->fd_.get(), LOOP_SET_STATUS64, &info);
      return loop;
    }
    return absl::UnavailableError("no free loop device");
  }
  ~LoopDevice() { ::ioctl(fd_.get(), LOOP_CLR_FD, 0); }
  const std::string& path() const { return path_; }

 private:
  LoopDevice(UniqueFd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}
  UniqueFd fd_;
  std::string path_;
};

// A read-only mount; unmounted (lazily, so it cannot fail to go) on destruction.
class Mount {
 public:
  Mount(const std::string& dev, const std::string& target) : target_(target) {
    ok_ = ::mount(dev.c_str(), target.c_str(), "ext4", MS_RDONLY, "noload") == 0;
  }
  ~Mount() {
    if (ok_) ::umount2(target_.c_str(), MNT_DETACH);
  }
  bool ok() const { return ok_; }

 private:
  std::string target_;
  bool ok_ = false;
};

void WriteFile(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  out << data;
}

TEST(Ext4ThroughLayersTest, MkfsImageSurvivesCommitCompressStackAndMounts) {
  if (::geteuid() != 0 || ::access("/dev/loop-control", R_OK | W_OK) != 0) {
    GTEST_SKIP() << "needs root and /dev/loop-control";
  }
  if (::access("/usr/sbin/mkfs.ext4", X_OK) != 0 && ::access("/sbin/mkfs.ext4", X_OK) != 0) {
    GTEST_SKIP() << "mkfs.ext4 not installed";
  }
  testing::ScratchDir dir("dadi-ext4");
  // The source tree mkfs.ext4 -d copies in.
  const std::string src = dir.Join("src");
  std::filesystem::create_directories(src + "/etc");
  std::filesystem::create_directories(src + "/data/sub");
  std::mt19937_64 rng(42);
  const std::string random_bin = testing::RandomBytes(300000, rng);
  WriteFile(src + "/etc/hello.txt", "hello from dadi\n");
  WriteFile(src + "/data/random.bin", random_bin);
  WriteFile(src + "/data/sub/text", testing::MixedData(70000, 1));
  std::filesystem::create_symlink("../etc/hello.txt", src + "/data/link");

  const std::string raw_path = dir.Join("fs.img");
  { std::ofstream f(raw_path, std::ios::binary); }
  std::filesystem::resize_file(raw_path, kImageSize);
  ASSERT_EQ(RunCommand({"mkfs.ext4", "-q", "-F", "-b", "4096", "-E", "lazy_itable_init=0", "-d",
                        src, raw_path}),
            0);
  const std::string raw = testing::ReadFileOrDie(raw_path);
  ASSERT_EQ(raw.size(), kImageSize);

  // Base layer: empty (as overlaybd's converter stacks diffs over a base).
  testing::StringWritableFile base;
  {
    auto w = SealedLayerWriter::Create(&base, LayerInfo{kImageSize, "base", "", ""});
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->Finish().ok());
  }
  // The file system into a writable layer, non-zero 4 KiB blocks only.
  auto layer = WritableLayer::Create(dir.Join("data"), dir.Join("index"),
                                     LayerInfo{kImageSize, "fs", "base", "ext4"});
  ASSERT_TRUE(layer.ok());
  const std::string zero(4096, '\0');
  for (uint64_t off = 0; off < kImageSize; off += 4096) {
    absl::string_view block(raw.data() + off, 4096);
    if (block != zero) {
      ASSERT_TRUE((*layer)->Write(off, block).ok());
    }
  }
  ASSERT_TRUE((*layer)->Sync().ok());
  testing::StringWritableFile sealed;
  ASSERT_TRUE((*layer)->Commit(&sealed).ok());
  testing::StringWritableFile z;
  ZFileWriterOptions o;
  o.block_size = 16384;
  o.threads = 2;
  auto zw = ZFileWriter::Create(&z, o);
  ASSERT_TRUE(zw.ok());
  ASSERT_TRUE((*zw)->Append(sealed.data()).ok());
  ASSERT_TRUE((*zw)->Close().ok());
  const std::string blob_path = dir.Join("fs.commit");
  {
    auto out = CreateLocalFile(blob_path);
    ASSERT_TRUE(out.ok());
    ASSERT_TRUE(WriteLayerBlob(*NewMemoryFile(z.data()), &(*zw)->final_header(), out->get()).ok());
    ASSERT_TRUE((*out)->Close().ok());
  }
  auto blob_file = OpenLocalFile(blob_path);
  ASSERT_TRUE(blob_file.ok());
  auto blob = LayerBlob::Open(std::shared_ptr<const RandomAccessFile>(*std::move(blob_file)));
  ASSERT_TRUE(blob.ok()) << blob.status();
  auto base_layer =
      SealedLayer::Open(std::shared_ptr<const RandomAccessFile>(NewMemoryFile(base.data())));
  ASSERT_TRUE(base_layer.ok());
  auto stack = LayerStack::Create({*base_layer, (*blob)->layer()});
  ASSERT_TRUE(stack.ok());

  // Export and compare.
  std::string exported(kImageSize, '\0');
  ASSERT_TRUE(PreadExact(**stack, 0, kImageSize, exported.data(), "export").ok());
  ASSERT_TRUE(exported == raw) << "exported image differs from the mkfs.ext4 image";
  const std::string exported_path = dir.Join("exported.img");
  WriteFile(exported_path, exported);

  // Mount it and compare the files.
  auto loop = LoopDevice::Attach(exported_path);
  if (!loop.ok()) GTEST_SKIP() << "no loop device: " << loop.status();
  const std::string mnt = dir.Join("mnt");
  std::filesystem::create_directories(mnt);
  {
    Mount m((*loop)->path(), mnt);
    ASSERT_TRUE(m.ok()) << "mount " << (*loop)->path() << ": " << std::strerror(errno);
    EXPECT_EQ(testing::ReadFileOrDie(mnt + "/etc/hello.txt"), "hello from dadi\n");
    EXPECT_TRUE(testing::ReadFileOrDie(mnt + "/data/random.bin") == random_bin);
    EXPECT_TRUE(testing::ReadFileOrDie(mnt + "/data/sub/text") == testing::MixedData(70000, 1));
    EXPECT_EQ(std::filesystem::read_symlink(mnt + "/data/link").string(), "../etc/hello.txt");
  }
  // Unmounted before the scratch directory goes (the Mount's scope ended).
}

}  // namespace
}  // namespace dadi::blockstore
