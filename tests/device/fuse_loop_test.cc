// The FUSE + loop backend against the real kernel: an ext4 image made with mkfs.ext4 -d,
// exposed through our FUSE server and a loop device, mounted read-only. Needs root, /dev/fuse
// and /dev/loop-control; skipped otherwise.
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "blockstore/device/fuse_loop_backend.h"
#include "blockstore/device/fuse_server.h"
#include "blockstore/device/loop_device.h"
#include "blockstore/device/mount.h"
#include "blockstore/file/file.h"
#include "blockstore/file/unique_fd.h"
#include "gtest/gtest.h"
#include "tests/support/kernel_state.h"
#include "tests/support/scratch_dir.h"

namespace dadi::blockstore {
namespace {

namespace fs = std::filesystem;
using ::dadi::testing::Eventually;
using ::dadi::testing::LoopsUnder;
using ::dadi::testing::MountsUnder;

// The whole file, or "<error: ...>" (compares unequal to any content we wrote).
std::string ReadWhole(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::StrCat("<error: open: ", std::strerror(errno), ">");
  std::string out;
  size_t used = 0;
  for (;;) {
    out.resize(used + (1 << 20));
    ssize_t n = ::read(fd, out.data() + used, out.size() - used);
    if (n < 0) {
      out = absl::StrCat("<error: read: ", std::strerror(errno), ">");
      used = out.size();
      break;
    }
    if (n == 0) break;
    used += static_cast<size_t>(n);
  }
  ::close(fd);
  out.resize(used);
  return out;
}

size_t ThreadCount() {
  size_t n = 0;
  for ([[maybe_unused]] const auto& entry : fs::directory_iterator("/proc/self/task")) ++n;
  return n;
}

// A disk that fails every read once armed (a registry gone away).
class FailingDisk final : public RandomAccessFile {
 public:
  explicit FailingDisk(std::shared_ptr<RandomAccessFile> base, uint64_t fail_from = 0)
      : base_(std::move(base)), fail_from_(fail_from) {}
  void Arm() { armed_ = true; }
  uint64_t Size() const override { return base_->Size(); }
  absl::StatusOr<size_t> Pread(uint64_t offset, size_t n, char* buf) const override {
    if (armed_ && offset + n > fail_from_) return absl::UnavailableError("injected failure");
    return base_->Pread(offset, n, buf);
  }
  std::string Name() const override { return "failing:" + base_->Name(); }

 private:
  std::shared_ptr<RandomAccessFile> base_;
  uint64_t fail_from_;
  std::atomic<bool> armed_{false};
};

// Drops the page cache of one file or block device so the next read reaches our server.
void DropCache(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

class FuseLoopTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root";
    if (::access("/dev/fuse", R_OK | W_OK) != 0) GTEST_SKIP() << "no /dev/fuse";
    if (::access("/dev/loop-control", R_OK | W_OK) != 0) GTEST_SKIP() << "no /dev/loop-control";
    threads_before_ = ThreadCount();
    MakeImage();
  }

  // Whatever a failed test left behind goes here, before the scratch directory is removed:
  // the backend first, then any mount still below the scratch directory.
  void TearDown() override {
    backend_.reset();
    for (const std::string& m : MountsUnder(scratch_.path() + "/")) {
      ADD_FAILURE() << "left mounted: " << m;
      ::umount2(m.c_str(), MNT_DETACH);
    }
  }

  void MakeImage() {
    std::mt19937_64 rng(42);
    std::string src = scratch_.Join("src");
    fs::create_directories(src + "/dir/sub");
    const std::vector<std::pair<std::string, size_t>> files = {
        {"empty", 0},           {"one", 1},
        {"page", 4096},         {"odd", 100'003},
        {"dir/big", 3'145'745}, {"dir/sub/mid", 600'001},
        {"dir/sub/small", 4095}};
    for (const auto& [name, size] : files) {
      std::string data(size, '\0');
      for (size_t i = 0; i < size; i += 8) {
        uint64_t word = rng();
        std::memcpy(data.data() + i, &word, std::min<size_t>(8, size - i));
      }
      std::ofstream(src + "/" + name, std::ios::binary).write(data.data(), data.size());
      files_[name] = data;
    }
    image_path_ = scratch_.Join("disk.img");
    std::string cmd =
        absl::StrCat("mkfs.ext4 -q -F -b 4096 -d ", src, " ", image_path_, " 16M >/dev/null 2>&1");
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    image_ = ReadWhole(image_path_);
    absl::StatusOr<std::unique_ptr<RandomAccessFile>> file = OpenLocalFile(image_path_);
    ASSERT_TRUE(file.ok()) << file.status();
    disk_ = std::move(*file);
  }

  void CreateBackend(FuseLoopBackendOptions options = {}) {
    options.state_dir = scratch_.Join("state");
    absl::StatusOr<std::unique_ptr<FuseLoopBackend>> backend = FuseLoopBackend::Create(options);
    ASSERT_TRUE(backend.ok()) << backend.status();
    backend_ = std::move(*backend);
  }

  void ExpectFilesEqual(const std::string& mount_point) {
    for (const auto& [name, data] : files_) {
      EXPECT_EQ(ReadWhole(mount_point + "/" + name), data) << name;
    }
  }

  std::string StateDir() { return scratch_.Join("state"); }

  dadi::testing::ScratchDir scratch_{"dadi-device-test"};
  size_t threads_before_ = 0;
  std::map<std::string, std::string> files_;
  std::string image_path_;
  std::string image_;
  std::shared_ptr<RandomAccessFile> disk_;
  std::unique_ptr<FuseLoopBackend> backend_;
};

TEST_F(FuseLoopTest, FilesReadBackEqual) {
  ASSERT_NO_FATAL_FAILURE(CreateBackend());
  absl::StatusOr<AttachedDevice> dev = backend_->Attach("img-1", disk_, {});
  ASSERT_TRUE(dev.ok()) << dev.status();
  EXPECT_EQ(dev->mount_point, StateDir() + "/mnt/img-1");
  EXPECT_TRUE(absl::StartsWith(dev->device_path, "/dev/loop"));
  EXPECT_EQ(dev->size, image_.size());
  struct stat st;
  ASSERT_EQ(::stat(dev->device_path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISBLK(st.st_mode));
  ExpectFilesEqual(dev->mount_point);

  // The FUSE root: one read-only file of the disk's size per device.
  ASSERT_EQ(::stat(backend_->FusePath("img-1").c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), image_.size());
  EXPECT_EQ(st.st_mode, S_IFREG | 0444u);
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(StateDir() + "/fuse")) {
    names.push_back(entry.path().filename());
  }
  EXPECT_EQ(names, std::vector<std::string>{"img-1"});
  // Read-only everywhere.
  EXPECT_LT(::open(backend_->FusePath("img-1").c_str(), O_RDWR), 0);
  EXPECT_EQ(errno, EROFS);
  EXPECT_LT(::open((dev->mount_point + "/new").c_str(), O_CREAT | O_WRONLY, 0644), 0);
  EXPECT_EQ(errno, EROFS);

  std::vector<AttachedDevice> list = backend_->List();
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].device_path, dev->device_path);
  EXPECT_EQ(backend_->Attach("img-1", disk_, {}).status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(backend_->Attach("../x", disk_, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend_->Resize("img-1", 1 << 30).code(), absl::StatusCode::kUnimplemented);
  EXPECT_TRUE(backend_->Detach("img-1").ok());
  EXPECT_EQ(backend_->Detach("img-1").code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(fs::exists(backend_->FusePath("img-1")));
}

// Attach fails cleanly (no hang, nothing left) when the file system cannot be mounted: a disk
// that is not ext4, and a disk that fails every read.
TEST_F(FuseLoopTest, FailedAttachLeavesNothingBehind) {
  const std::string state = StateDir() + "/";
  ASSERT_NO_FATAL_FAILURE(CreateBackend());
  absl::StatusOr<AttachedDevice> garbage =
      backend_->Attach("garbage", NewMemoryFile(std::string(4 << 20, 'g')), {});
  EXPECT_FALSE(garbage.ok());
  auto failing = std::make_shared<FailingDisk>(disk_);
  failing->Arm();
  absl::StatusOr<AttachedDevice> broken = backend_->Attach("broken", failing, {});
  EXPECT_FALSE(broken.ok());
  EXPECT_TRUE(backend_->List().empty());
  EXPECT_FALSE(fs::exists(backend_->FusePath("garbage")));
  EXPECT_FALSE(fs::exists(backend_->FusePath("broken")));
  EXPECT_EQ(MountsUnder(state + "mnt/"), std::vector<std::string>{});
  EXPECT_TRUE(Eventually([&] { return LoopsUnder(state).empty(); }));
  // The ids are free again.
  absl::StatusOr<AttachedDevice> ok = backend_->Attach("broken", disk_, {});
  ASSERT_TRUE(ok.ok()) << ok.status();
  ExpectFilesEqual(ok->mount_point);
}

TEST_F(FuseLoopTest, RawFuseReadsAtOddOffsetsEqualTheImage) {
  ASSERT_NO_FATAL_FAILURE(CreateBackend());
  AttachOptions raw;
  raw.fs_type = "";  // the block device only
  absl::StatusOr<AttachedDevice> dev = backend_->Attach("raw", disk_, raw);
  ASSERT_TRUE(dev.ok()) << dev.status();
  EXPECT_TRUE(dev->mount_point.empty());
  const std::string path = backend_->FusePath("raw");
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  std::mt19937_64 rng(7);
  const uint64_t reads_before = backend_->fuse_server().handler().reads();
  std::vector<char> buf(3 << 20);
  for (int i = 0; i < 200; ++i) {
    if (i % 20 == 0) ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    uint64_t offset = rng() % (image_.size() + 8192);
    size_t size = 1 + rng() % (i % 10 == 0 ? buf.size() : 70'000);
    ssize_t n = ::pread(fd, buf.data(), size, static_cast<off_t>(offset));
    size_t want = offset >= image_.size() ? 0 : std::min<size_t>(size, image_.size() - offset);
    ASSERT_EQ(n, static_cast<ssize_t>(want)) << "offset " << offset << " size " << size;
    ASSERT_EQ(
        std::memcmp(buf.data(), image_.data() + std::min<size_t>(offset, image_.size()), want), 0)
        << "offset " << offset << " size " << size;
  }
  ::close(fd);
  EXPECT_GT(backend_->fuse_server().handler().reads(), reads_before);

  // The same bytes through the block device.
  fd = ::open(dev->device_path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  std::string whole(image_.size(), '\0');
  ASSERT_EQ(::pread(fd, whole.data(), whole.size(), 0), static_cast<ssize_t>(whole.size()));
  ::close(fd);
  EXPECT_TRUE(whole == image_);
}

TEST_F(FuseLoopTest, FailingDiskGivesEioThroughFuseNeverWrongBytes) {
  ASSERT_NO_FATAL_FAILURE(CreateBackend());
  const uint64_t half = image_.size() / 2;
  auto failing = std::make_shared<FailingDisk>(disk_, half);
  failing->Arm();
  AttachOptions raw;
  raw.fs_type = "";
  ASSERT_TRUE(backend_->Attach("failing", failing, raw).ok());
  int fd = ::open(backend_->FusePath("failing").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  std::vector<char> buf(1 << 20);
  ssize_t n = ::pread(fd, buf.data(), 65536, 0);
  ASSERT_EQ(n, 65536);
  EXPECT_EQ(std::memcmp(buf.data(), image_.data(), 65536), 0);
  errno = 0;
  EXPECT_EQ(::pread(fd, buf.data(), 4096, static_cast<off_t>(half + 4096)), -1);
  EXPECT_EQ(errno, EIO);
  // A read straddling the boundary: whatever comes back is the image's bytes, then EIO.
  n = ::pread(fd, buf.data(), buf.size(), static_cast<off_t>(half - 100'000));
  if (n > 0) {
    EXPECT_LT(static_cast<size_t>(n), buf.size());
    EXPECT_EQ(std::memcmp(buf.data(), image_.data() + half - 100'000, n), 0);
  } else {
    EXPECT_EQ(n, -1);
    EXPECT_EQ(errno, EIO);
  }
  ::close(fd);
  EXPECT_GT(backend_->fuse_server().handler().read_errors(), 0u);
}

TEST_F(FuseLoopTest, FailingDiskGivesEioThroughMountedFsNeverWrongBytes) {
  ASSERT_NO_FATAL_FAILURE(CreateBackend());
  auto failing = std::make_shared<FailingDisk>(disk_);
  absl::StatusOr<AttachedDevice> dev = backend_->Attach("failing", failing, {});
  ASSERT_TRUE(dev.ok()) << dev.status();
  failing->Arm();
  // Nothing cached anywhere: the FUSE file's pages and the loop device's.
  DropCache(backend_->FusePath("failing"));
  DropCache(dev->device_path);
  for (const std::string name : {"dir/big", "dir/sub/mid", "odd"}) {
    const std::string& data = files_[name];
    std::string path = dev->mount_point + "/" + name;
    DropCache(path);
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      EXPECT_EQ(errno, EIO) << name;  // the inode itself could not be read
      continue;
    }
    bool failed = false;
    std::vector<char> buf(65536);
    for (size_t off = 0; off < data.size(); off += buf.size()) {
      ssize_t n = ::pread(fd, buf.data(), buf.size(), static_cast<off_t>(off));
      if (n < 0) {
        EXPECT_EQ(errno, EIO) << name << " at " << off;
        failed = true;
        continue;
      }
      ASSERT_EQ(std::memcmp(buf.data(), data.data() + off, n), 0) << name << " at " << off;
    }
    ::close(fd);
    EXPECT_TRUE(failed) << name << " read without error from a failing disk";
  }
  EXPECT_TRUE(backend_->Detach("failing").ok());
}

TEST_F(FuseLoopTest, ManyConcurrentReaders) {
  ASSERT_NO_FATAL_FAILURE(CreateBackend());
  absl::StatusOr<AttachedDevice> a = backend_->Attach("a", disk_, {});
  absl::StatusOr<AttachedDevice> b = backend_->Attach("b", disk_, {});
  ASSERT_TRUE(a.ok() && b.ok());
  std::vector<std::string> names;
  for (const auto& [name, data] : files_) names.push_back(name);
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(t);
      const std::string& mp = (t % 2 == 0) ? a->mount_point : b->mount_point;
      int raw = ::open(backend_->FusePath(t % 2 == 0 ? "b" : "a").c_str(), O_RDONLY);
      std::vector<char> buf(256 * 1024);
      for (int i = 0; i < 40; ++i) {
        const std::string& name = names[rng() % names.size()];
        if (i % 8 == 0) DropCache(mp + "/" + name);
        if (ReadWhole(mp + "/" + name) != files_.at(name)) ++mismatches;
        if (i % 10 == 0) ::posix_fadvise(raw, 0, 0, POSIX_FADV_DONTNEED);
        uint64_t off = rng() % image_.size();
        size_t n = 1 + rng() % buf.size();
        ssize_t got = ::pread(raw, buf.data(), n, static_cast<off_t>(off));
        size_t want = std::min<size_t>(n, image_.size() - off);
        if (got != static_cast<ssize_t>(want) ||
            std::memcmp(buf.data(), image_.data() + off, want) != 0) {
          ++mismatches;
        }
      }
      ::close(raw);
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(mismatches.load(), 0);
}

// A second backend on a state directory that a running one serves is refused; one left by a
// backend that was killed (SIGKILL: FUSE mount aborted, the device's mount still there, held
// by an open file as a container would) is cleaned up, and the same image attaches again.
TEST_F(FuseLoopTest, RestartAfterKillReclaimsTheStateDirectory) {
  const std::string state = StateDir();
  int ready[2];
  ASSERT_EQ(::pipe2(ready, O_CLOEXEC), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    FuseLoopBackendOptions options;
    options.state_dir = state;
    absl::StatusOr<std::unique_ptr<FuseLoopBackend>> backend = FuseLoopBackend::Create(options);
    if (!backend.ok()) _exit(1);
    absl::StatusOr<AttachedDevice> dev = (*backend)->Attach("img-1", disk_, {});
    if (!dev.ok()) _exit(2);
    if (::write(ready[1], "r", 1) != 1) _exit(3);
    for (;;) ::pause();
  }
  // Whatever fails below, the first backend's process goes (TearDown unmounts what it left).
  struct Reaper {
    pid_t pid;
    ~Reaper() {
      if (pid > 0) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
      }
    }
  } reaper{child};
  ::close(ready[1]);
  char c = 0;
  const bool attached = ::read(ready[0], &c, 1) == 1;
  ::close(ready[0]);
  ASSERT_TRUE(attached) << "the first backend did not attach";
  const std::string stale_mount = state + "/mnt/img-1";
  // A user of the device (a container's overlay would be one) keeps its mount busy.
  UniqueFd busy(::open((stale_mount + "/one").c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(busy.valid());
  {
    FuseLoopBackendOptions options;
    options.state_dir = state;
    absl::StatusOr<std::unique_ptr<FuseLoopBackend>> second = FuseLoopBackend::Create(options);
    EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_TRUE(absl::StrContains(second.status().message(), "running dadi-blockd"))
        << second.status();
  }
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  reaper.pid = -1;

  ASSERT_NO_FATAL_FAILURE(CreateBackend());
  std::vector<std::string> mounts = MountsUnder(state + "/");
  EXPECT_EQ(mounts, std::vector<std::string>{state + "/fuse"});
  absl::StatusOr<AttachedDevice> dev = backend_->Attach("img-1", disk_, {});
  ASSERT_TRUE(dev.ok()) << dev.status();
  ExpectFilesEqual(dev->mount_point);
  busy.reset();  // the old device's last user: its loop device clears itself
  EXPECT_TRUE(backend_->Detach("img-1").ok());
  backend_.reset();
  EXPECT_TRUE(Eventually([&] { return LoopsUnder(state).empty(); }));
}

TEST_F(FuseLoopTest, AttachDetachTwentyTimesLeavesNothingBehind) {
  const std::string state = StateDir() + "/";
  ASSERT_NO_FATAL_FAILURE(CreateBackend());
  const size_t threads_with_backend = ThreadCount();
  for (int i = 0; i < 20; ++i) {
    std::string id = absl::StrCat("cycle-", i % 3);
    absl::StatusOr<AttachedDevice> dev = backend_->Attach(id, disk_, {});
    ASSERT_TRUE(dev.ok()) << i << ": " << dev.status();
    ASSERT_EQ(ReadWhole(dev->mount_point + "/one"), files_["one"]);
    ASSERT_TRUE(backend_->Detach(id).ok()) << i;
    EXPECT_TRUE(Eventually([&] { return LoopsUnder(state).empty(); }))
        << "loop device still bound after detach " << i;
    EXPECT_EQ(MountsUnder(state + "mnt/"), std::vector<std::string>{}) << i;
  }
  EXPECT_EQ(ThreadCount(), threads_with_backend);
  EXPECT_TRUE(backend_->List().empty());
  backend_.reset();
  EXPECT_EQ(MountsUnder(state), std::vector<std::string>{});
  EXPECT_EQ(LoopsUnder(state), std::set<std::string>{});
  EXPECT_EQ(ThreadCount(), threads_before_);
}

TEST_F(FuseLoopTest, DestructorCleansUpBusyDevicesWithoutHanging) {
  const std::string state = StateDir() + "/";
  ASSERT_NO_FATAL_FAILURE(CreateBackend());
  absl::StatusOr<AttachedDevice> a = backend_->Attach("busy", disk_, {});
  absl::StatusOr<AttachedDevice> b = backend_->Attach("idle", disk_, {});
  ASSERT_TRUE(a.ok() && b.ok());
  // A reader that keeps a file open (a container still running) makes the mount busy.
  int fd = ::open((a->mount_point + "/dir/big").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  char c;
  ASSERT_EQ(::pread(fd, &c, 1, 0), 1);
  backend_.reset();  // as after a failed test: nothing detached explicitly
  EXPECT_EQ(MountsUnder(state), std::vector<std::string>{});
  EXPECT_EQ(ThreadCount(), threads_before_);
  // The connection is gone: uncached reads fail instead of waiting forever.
  DropCache(a->device_path);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  std::vector<char> buf(1 << 20);
  ssize_t n = ::pread(fd, buf.data(), buf.size(), 2 << 20);
  if (n >= 0) {
    EXPECT_EQ(std::memcmp(buf.data(), files_["dir/big"].data() + (2 << 20), n), 0);
  } else {
    EXPECT_EQ(errno, EIO);
  }
  ::close(fd);
  // The last user gone, the lazily unmounted file system releases its loop device.
  EXPECT_TRUE(Eventually([&] { return LoopsUnder(state).empty(); }));
}

TEST_F(FuseLoopTest, LazilyUnmountedDeviceKeepsServingUntilReleased) {
  const std::string state = StateDir() + "/";
  ASSERT_NO_FATAL_FAILURE(CreateBackend());
  absl::StatusOr<AttachedDevice> dev = backend_->Attach("busy", disk_, {});
  ASSERT_TRUE(dev.ok());
  int fd = ::open((dev->mount_point + "/dir/big").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(backend_->Detach("busy").ok());
  EXPECT_EQ(MountsUnder(state + "mnt/"), std::vector<std::string>{});
  // The open file still reads correct bytes through loop and FUSE.
  DropCache(dev->device_path);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  const std::string& big = files_["dir/big"];
  std::string back(big.size(), '\0');
  ASSERT_EQ(::pread(fd, back.data(), back.size(), 0), static_cast<ssize_t>(big.size()));
  EXPECT_TRUE(back == big);
  // Same id again while the old one is in use: refused, not confused.
  EXPECT_EQ(backend_->Attach("busy", disk_, {}).status().code(), absl::StatusCode::kUnavailable);
  ::close(fd);
  EXPECT_TRUE(Eventually([&] { return LoopsUnder(state).empty(); }));
  absl::StatusOr<AttachedDevice> again = backend_->Attach("busy", disk_, {});
  ASSERT_TRUE(again.ok()) << again.status();
  ExpectFilesEqual(again->mount_point);
}

std::string SysBlock(const LoopDevice& loop, const std::string& attr) {
  std::string v = ReadWhole(absl::StrCat("/sys/block/loop", loop.number(), "/", attr));
  while (!v.empty() && v.back() == '\n') v.pop_back();
  return v;
}

// Both ways of binding give the same device: read-only, autoclear, 4 KiB blocks, buffered.
TEST_F(FuseLoopTest, LoopDeviceConfiguredAlikeByBothIoctlPaths) {
  for (bool configure : {true, false}) {
    SCOPED_TRACE(configure ? "LOOP_CONFIGURE" : "LOOP_SET_FD");
    LoopOptions options;
    options.use_loop_configure = configure;
    absl::StatusOr<LoopDevice> loop = LoopDevice::Attach(image_path_, options);
    ASSERT_TRUE(loop.ok()) << loop.status();
    EXPECT_EQ(SysBlock(*loop, "loop/backing_file"), image_path_);
    EXPECT_EQ(SysBlock(*loop, "ro"), "1");
    EXPECT_EQ(SysBlock(*loop, "loop/autoclear"), "1");
    EXPECT_EQ(SysBlock(*loop, "loop/dio"), "0");
    EXPECT_EQ(SysBlock(*loop, "queue/logical_block_size"), "4096");
    std::string back(image_.size(), '\0');
    ASSERT_EQ(::pread(loop->fd(), back.data(), back.size(), 0), static_cast<ssize_t>(back.size()));
    EXPECT_TRUE(back == image_);
    const int number = loop->number();
    ASSERT_TRUE(loop->Detach().ok());
    EXPECT_TRUE(Eventually([&] { return LoopBackingFile(number) != image_path_; }));
  }
}

// blockd's setting: direct I/O from the loop device into the FUSE file (no second page cache
// and readahead under ext4's) and a chosen device readahead. Files still read back equal.
TEST_F(FuseLoopTest, DirectIoThroughFuseWithChosenReadahead) {
  FuseLoopBackendOptions options;
  options.loop.direct_io = true;
  options.loop.read_ahead_kb = 16;
  ASSERT_NO_FATAL_FAILURE(CreateBackend(options));
  absl::StatusOr<AttachedDevice> dev = backend_->Attach("dio", disk_, {});
  ASSERT_TRUE(dev.ok()) << dev.status();
  const std::string sys =
      absl::StrCat("/sys/block/", fs::path(dev->device_path).filename().string(), "/");
  auto attr = [&](const std::string& name) {
    std::string v = ReadWhole(sys + name);
    while (!v.empty() && v.back() == '\n') v.pop_back();
    return v;
  };
  EXPECT_EQ(attr("loop/dio"), "1");
  EXPECT_EQ(attr("queue/read_ahead_kb"), "16");
  ExpectFilesEqual(dev->mount_point);  // a fresh mount: every byte came through FUSE
  EXPECT_TRUE(backend_->Detach("dio").ok());
}

// Threads racing for the same free device all end up with devices of their own.
TEST_F(FuseLoopTest, ConcurrentBindsGetDistinctDevices) {
  std::vector<std::optional<LoopDevice>> loops(6);
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (size_t i = 0; i < loops.size(); ++i) {
    threads.emplace_back([&, i] {
      absl::StatusOr<LoopDevice> loop = LoopDevice::Attach(image_path_);
      if (loop.ok()) {
        loops[i] = std::move(*loop);
      } else {
        ++failures;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  std::set<int> numbers;
  for (const auto& loop : loops) {
    if (loop.has_value()) numbers.insert(loop->number());
  }
  EXPECT_EQ(numbers.size(), loops.size() - failures.load());
  loops.clear();
  EXPECT_TRUE(Eventually([&] { return LoopsUnder(image_path_).empty(); }));
}

// The restart plan in one process: a server hands its /dev/fuse connection over, a new one
// resumes it without INIT, and the loop device and ext4 mount on top never notice.
TEST_F(FuseLoopTest, ConnectionSurvivesHandoverToANewServer) {
  const std::string fuse_dir = scratch_.Join("fuse");
  const std::string mnt = scratch_.Join("mnt");
  fs::create_directories(fuse_dir);
  fs::create_directories(mnt);
  auto table = std::make_shared<FuseFileTable>();
  ASSERT_TRUE(table->Add("img", disk_).ok());
  absl::StatusOr<std::unique_ptr<FuseServer>> first = FuseServer::Mount(fuse_dir, table);
  ASSERT_TRUE(first.ok()) << first.status();
  std::unique_ptr<FuseServer> server = std::move(*first);
  {
    absl::StatusOr<LoopDevice> loop = LoopDevice::Attach(fuse_dir + "/img");
    ASSERT_TRUE(loop.ok()) << loop.status();
    absl::StatusOr<MountPoint> mount =
        MountPoint::Mount(loop->path(), mnt, "ext4", MS_RDONLY, "noload");
    ASSERT_TRUE(mount.ok()) << mount.status();
    EXPECT_EQ(ReadWhole(mnt + "/odd"), files_["odd"]);

    // Hand over: the fd, the parameters and the table's snapshot are all the new server gets.
    FuseHandover handover = server->Release();
    server.reset();  // the old server is gone; the mount and the connection stay
    std::string params = handover.params.Encode();
    absl::StatusOr<FuseTableState> state = FuseTableState::Decode(table->State().Encode());
    ASSERT_TRUE(state.ok()) << state.status();
    auto new_table = std::make_shared<FuseFileTable>();
    for (const FuseFileInfo& f : state->files) ASSERT_TRUE(new_table->Restore(f, disk_).ok());
    new_table->AdvanceNextIno(state->next_ino);
    absl::StatusOr<FuseConnParams> decoded = FuseConnParams::Decode(params);
    ASSERT_TRUE(decoded.ok());
    handover.params = *decoded;
    absl::StatusOr<std::unique_ptr<FuseServer>> second =
        FuseServer::Resume(std::move(handover), new_table);
    ASSERT_TRUE(second.ok()) << second.status();
    server = std::move(*second);
    // Files never read before the handover come through the new server.
    EXPECT_EQ(ReadWhole(mnt + "/dir/big"), files_["dir/big"]);
    EXPECT_EQ(ReadWhole(mnt + "/dir/sub/mid"), files_["dir/sub/mid"]);
    EXPECT_GT(server->handler().reads(), 0u);
    EXPECT_TRUE(mount->Unmount().ok());
    EXPECT_TRUE(loop->Detach().ok());
  }
  server.reset();
  EXPECT_EQ(MountsUnder(scratch_.path() + "/"), std::vector<std::string>{});
  EXPECT_EQ(ThreadCount(), threads_before_);
}

// A disk whose reads covering `offset` announce themselves on `notify_fd` and never return:
// the server process dies with such a read in hand.
class StuckDisk final : public RandomAccessFile {
 public:
  StuckDisk(std::shared_ptr<RandomAccessFile> base, uint64_t offset, int notify_fd)
      : base_(std::move(base)), offset_(offset), notify_fd_(notify_fd) {}
  uint64_t Size() const override { return base_->Size(); }
  absl::StatusOr<size_t> Pread(uint64_t offset, size_t n, char* buf) const override {
    if (offset <= offset_ && offset_ < offset + n) {
      char c = 1;
      if (::write(notify_fd_, &c, 1) != 1) _exit(3);
      for (;;) ::pause();
    }
    return base_->Pread(offset, n, buf);
  }
  std::string Name() const override { return "stuck"; }

 private:
  std::shared_ptr<RandomAccessFile> base_;
  uint64_t offset_;
  int notify_fd_;
};

// A one-part message with room for one file descriptor (SCM_RIGHTS): how the serving process
// hands its /dev/fuse fd to the keeper below.
class FdMessage {
 public:
  FdMessage(char* data, size_t size) : iov_{data, size} {
    msg_.msg_iov = &iov_;
    msg_.msg_iovlen = 1;
    msg_.msg_control = control_;
    msg_.msg_controllen = sizeof(control_);
  }
  FdMessage(const FdMessage&) = delete;  // msg_ points into the object
  FdMessage& operator=(const FdMessage&) = delete;
  msghdr* get() { return &msg_; }

 private:
  char control_[CMSG_SPACE(sizeof(int))] = {};
  iovec iov_;
  msghdr msg_ = {};
};

bool SendWithFd(int sock, const std::string& payload, int fd) {
  FdMessage message(const_cast<char*>(payload.data()), payload.size());
  cmsghdr* cmsg = CMSG_FIRSTHDR(message.get());
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
  return ::sendmsg(sock, message.get(), 0) >= 0;
}

// Receives at most payload->size() bytes into *payload (shrunk to what came) and the fd sent
// with them; false when either is missing.
bool ReceiveWithFd(int sock, std::string* payload, int* fd) {
  FdMessage message(payload->data(), payload->size());
  const ssize_t got = ::recvmsg(sock, message.get(), MSG_CMSG_CLOEXEC);
  const cmsghdr* cmsg = CMSG_FIRSTHDR(message.get());
  if (got <= 0 || cmsg == nullptr || cmsg->cmsg_type != SCM_RIGHTS) return false;
  std::memcpy(fd, CMSG_DATA(cmsg), sizeof(int));
  payload->resize(static_cast<size_t>(got));
  return true;
}

// The restart for real: the serving process is killed (SIGKILL) while it holds an unanswered
// read; a keeper (here the test process) kept a dup of its /dev/fuse fd and the recorded state,
// a new server resumes the connection and the stuck read completes with the right bytes.
TEST_F(FuseLoopTest, ReadInFlightSurvivesServerProcessDeath) {
  const std::string fuse_dir = scratch_.Join("fuse");
  fs::create_directories(fuse_dir);
  int sock[2];
  int notify[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sock), 0);
  ASSERT_EQ(::pipe2(notify, O_CLOEXEC), 0);
  const uint64_t stuck_offset = 5 << 20;  // inside the image, never read before
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // The first blockd: serves, hands a dup of its fd and its state to the keeper, then
    // carries on serving until it is killed.
    auto table = std::make_shared<FuseFileTable>();
    if (!table->Add("img", std::make_shared<StuckDisk>(disk_, stuck_offset, notify[1])).ok()) {
      _exit(1);
    }
    absl::StatusOr<std::unique_ptr<FuseServer>> server = FuseServer::Mount(fuse_dir, table);
    if (!server.ok()) _exit(2);
    FuseHandover info = (*server)->Release();  // to read fd and params; serve again below
    std::string payload = info.params.Encode() + table->State().Encode();
    if (!SendWithFd(sock[1], payload, info.fd.get())) _exit(4);
    absl::StatusOr<std::unique_ptr<FuseServer>> again = FuseServer::Resume(std::move(info), table);
    if (!again.ok()) _exit(5);
    for (;;) ::pause();
  }
  ::close(sock[1]);
  ::close(notify[1]);
  // The keeper's side: the fd and the recorded state.
  std::string payload(4096, '\0');
  int kept_fd = -1;
  const bool received = ReceiveWithFd(sock[0], &payload, &kept_fd);
  ::close(sock[0]);
  if (!received) {
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
    ::close(notify[0]);
    FAIL() << "no handover from the serving process";
  }
  FuseHandover handover;
  handover.fd.reset(kept_fd);
  handover.mountpoint = fuse_dir;

  // A reader that will get stuck in the first server.
  std::atomic<ssize_t> read_result{-2};
  std::string buf(4096, '\0');
  std::thread reader([&] {
    int fd = ::open((fuse_dir + "/img").c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      read_result = -3;
      return;
    }
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
    read_result = ::pread(fd, buf.data(), buf.size(), static_cast<off_t>(stuck_offset));
    ::close(fd);
  });
  struct pollfd pfd = {notify[0], POLLIN, 0};
  const bool stuck = ::poll(&pfd, 1, 10'000) == 1;
  ::close(notify[0]);
  // The server process dies with the read in hand; the kept fd keeps the connection alive.
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  EXPECT_TRUE(stuck) << "the read never reached the first server";

  absl::StatusOr<FuseConnParams> params =
      FuseConnParams::Decode(absl::string_view(payload).substr(0, FuseConnParams::kEncodedLength));
  absl::StatusOr<FuseTableState> state =
      FuseTableState::Decode(absl::string_view(payload).substr(FuseConnParams::kEncodedLength));
  std::unique_ptr<FuseServer> server;
  if (params.ok() && state.ok()) {
    handover.params = *params;
    auto table = std::make_shared<FuseFileTable>();
    for (const FuseFileInfo& f : state->files) EXPECT_TRUE(table->Restore(f, disk_).ok());
    table->AdvanceNextIno(state->next_ino);
    absl::StatusOr<std::unique_ptr<FuseServer>> resumed =
        FuseServer::Resume(std::move(handover), table);
    EXPECT_TRUE(resumed.ok()) << resumed.status();
    if (resumed.ok()) server = std::move(*resumed);
  } else {
    ADD_FAILURE() << params.status() << " " << state.status();
  }
  // The resent read is answered by the new server, within a bound; if it is not, tearing the
  // connection down (unmount, close the last fd) releases the reader with an error.
  for (int i = 0; i < 1000 && read_result.load() == -2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(read_result.load(), 4096) << "the read taken by the dead server was not resent";
  if (server == nullptr || read_result.load() == -2) {
    server.reset();
    handover.fd.reset();
    ::umount2(fuse_dir.c_str(), MNT_DETACH);
  }
  reader.join();
  if (read_result.load() == 4096) {
    EXPECT_EQ(std::memcmp(buf.data(), image_.data() + stuck_offset, 4096), 0);
  }
  server.reset();
  EXPECT_EQ(MountsUnder(scratch_.path() + "/"), std::vector<std::string>{});
}

}  // namespace
}  // namespace dadi::blockstore
