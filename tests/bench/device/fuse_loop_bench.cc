// fuse_loop_bench: read throughput of a file inside an ext4 image served by the FUSE + loop
// backend, against the same image loop-mounted straight from a local file (the baseline, in
// the same run). Every measurement starts with cold caches (drop_caches when writable, and
// POSIX_FADV_DONTNEED on every file and device on the path). Needs root, /dev/fuse and
// /dev/loop-control.
//
//   fuse_loop_bench [--file-mb N] [--runs N] [--random-reads N] [--threads N]
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "blockstore/device/fuse_loop_backend.h"
#include "blockstore/device/loop_device.h"
#include "blockstore/device/mount.h"
#include "blockstore/file/file.h"

namespace {

using dadi::blockstore::FuseLoopBackend;
using dadi::blockstore::FuseLoopBackendOptions;
using dadi::blockstore::LoopDevice;
using dadi::blockstore::MountPoint;

struct Args {
  uint64_t file_mb = 128;
  int runs = 3;
  int random_reads = 20000;
  int threads = 8;
};

void DropFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

void DropCaches(const std::vector<std::string>& paths) {
  ::sync();
  for (const std::string& p : paths) DropFile(p);
  int fd = ::open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
  if (fd >= 0) {
    if (::write(fd, "3", 1) != 1) std::perror("drop_caches");
    ::close(fd);
  }
}

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// MB/s reading the whole file with 1 MiB reads.
double Sequential(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    std::perror(path.c_str());
    std::exit(1);
  }
  std::vector<char> buf(1 << 20);
  uint64_t total = 0;
  auto start = std::chrono::steady_clock::now();
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) {
      std::perror("read");
      std::exit(1);
    }
    if (n == 0) break;
    total += static_cast<uint64_t>(n);
  }
  double s = Seconds(start);
  ::close(fd);
  return static_cast<double>(total) / (1 << 20) / s;
}

// IOPS of 4 KiB reads at random aligned offsets, `threads` readers sharing `count` reads.
double Random4k(const std::string& path, uint64_t size, int count, int threads) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    std::perror(path.c_str());
    std::exit(1);
  }
  // No read-ahead: a random reader would not profit from it and it hides the per-read cost.
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
  std::atomic<int> next{0};
  std::atomic<bool> failed{false};
  auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      std::mt19937_64 rng(1000 + t);
      char buf[4096];
      const uint64_t blocks = size / 4096;
      while (next.fetch_add(1) < count) {
        off_t off = static_cast<off_t>((rng() % blocks) * 4096);
        if (::pread(fd, buf, sizeof(buf), off) != static_cast<ssize_t>(sizeof(buf))) failed = true;
      }
    });
  }
  for (std::thread& w : workers) w.join();
  double s = Seconds(start);
  ::close(fd);
  if (failed) {
    std::fprintf(stderr, "random read of %s failed\n", path.c_str());
    std::exit(1);
  }
  return count / s;
}

int Run(const Args& args) {
  char templ[] = "/tmp/dadi-fuse-loop-bench-XXXXXX";
  if (::mkdtemp(templ) == nullptr) {
    std::perror("mkdtemp");
    return 1;
  }
  const std::string dir = templ;
  const std::string src = dir + "/src";
  std::filesystem::create_directories(src);
  const uint64_t file_size = args.file_mb << 20;
  {
    std::vector<char> chunk(1 << 20);
    std::mt19937_64 rng(1);
    FILE* f = std::fopen((src + "/data").c_str(), "wb");
    for (uint64_t done = 0; done < file_size; done += chunk.size()) {
      for (size_t i = 0; i < chunk.size(); i += 8) {
        uint64_t w = rng();
        std::memcpy(chunk.data() + i, &w, 8);
      }
      std::fwrite(chunk.data(), 1, chunk.size(), f);
    }
    std::fclose(f);
  }
  const std::string image = dir + "/disk.img";
  std::string cmd = absl::StrCat("mkfs.ext4 -q -F -b 4096 -d ", src, " ", image, " ",
                                 args.file_mb + 64, "M >/dev/null");
  if (std::system(cmd.c_str()) != 0) {
    std::fprintf(stderr, "%s failed\n", cmd.c_str());
    return 1;
  }
  std::filesystem::remove_all(src);

  // Baseline: the image file on a loop device directly.
  const std::string base_mnt = dir + "/base";
  std::filesystem::create_directories(base_mnt);
  absl::StatusOr<LoopDevice> base_loop = LoopDevice::Attach(image);
  if (!base_loop.ok()) {
    std::fprintf(stderr, "%s\n", base_loop.status().ToString().c_str());
    return 1;
  }
  absl::StatusOr<MountPoint> base_mount =
      MountPoint::Mount(base_loop->path(), base_mnt, "ext4", MS_RDONLY, "noload");
  if (!base_mount.ok()) {
    std::fprintf(stderr, "%s\n", base_mount.status().ToString().c_str());
    return 1;
  }

  // dadi: the same image as a RandomAccessFile behind FUSE + loop.
  FuseLoopBackendOptions options;
  options.state_dir = dir + "/state";
  absl::StatusOr<std::unique_ptr<FuseLoopBackend>> backend = FuseLoopBackend::Create(options);
  if (!backend.ok()) {
    std::fprintf(stderr, "%s\n", backend.status().ToString().c_str());
    return 1;
  }
  absl::StatusOr<std::unique_ptr<dadi::blockstore::RandomAccessFile>> disk =
      dadi::blockstore::OpenLocalFile(image);
  if (!disk.ok()) return 1;
  absl::StatusOr<dadi::blockstore::AttachedDevice> dev =
      (*backend)->Attach("bench", std::shared_ptr(std::move(*disk)), {});
  if (!dev.ok()) {
    std::fprintf(stderr, "%s\n", dev.status().ToString().c_str());
    return 1;
  }

  struct Side {
    const char* name;
    std::string file;
    std::vector<std::string> caches;
  };
  const Side base{"loop(file)", base_mnt + "/data", {base_mnt + "/data", base_loop->path(), image}};
  const Side fuse{
      "fuse+loop",
      dev->mount_point + "/data",
      {dev->mount_point + "/data", dev->device_path, (*backend)->FusePath("bench"), image}};

  struct Test {
    const char* name;
    const char* unit;
    std::function<double(const Side&)> run;
  };
  const std::vector<Test> tests = {
      {"sequential 1 MiB", "MiB/s", [&](const Side& s) { return Sequential(s.file); }},
      {"random 4 KiB, 1 thread", "IOPS",
       [&](const Side& s) { return Random4k(s.file, file_size, args.random_reads, 1); }},
      {"random 4 KiB, N threads", "IOPS",
       [&](const Side& s) { return Random4k(s.file, file_size, args.random_reads, args.threads); }},
  };
  std::printf("file %llu MiB, %d runs (median), %d random reads, %d threads, cold cache\n",
              static_cast<unsigned long long>(args.file_mb), args.runs, args.random_reads,
              args.threads);
  std::printf("%-26s %-6s %12s %12s %8s\n", "test", "unit", "loop(file)", "fuse+loop", "ratio");
  for (const Test& t : tests) {
    std::vector<double> b, f;
    for (int r = 0; r < args.runs; ++r) {
      // Alternate the order so neither side always runs second.
      const Side* order[2] = {&base, &fuse};
      if (r % 2 == 1) std::swap(order[0], order[1]);
      for (const Side* s : order) {
        DropCaches(s->caches);
        (s == &base ? b : f).push_back(t.run(*s));
      }
    }
    std::sort(b.begin(), b.end());
    std::sort(f.begin(), f.end());
    double bm = b[b.size() / 2], fm = f[f.size() / 2];
    std::printf("%-26s %-6s %12.1f %12.1f %8.2f\n", t.name, t.unit, bm, fm, fm / bm);
  }

  backend->reset();
  base_mount->Unmount().IgnoreError();
  base_loop->Detach().IgnoreError();
  std::filesystem::remove_all(dir);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    long v = std::strtol(argv[i + 1], nullptr, 10);
    if (v <= 0) {
      std::fprintf(stderr, "bad value for %s\n", flag.c_str());
      return 2;
    }
    if (flag == "--file-mb") {
      args.file_mb = static_cast<uint64_t>(v);
    } else if (flag == "--runs") {
      args.runs = static_cast<int>(v);
    } else if (flag == "--random-reads") {
      args.random_reads = static_cast<int>(v);
    } else if (flag == "--threads") {
      args.threads = static_cast<int>(v);
    } else {
      std::fprintf(stderr, "usage: %s [--file-mb N] [--runs N] [--random-reads N] [--threads N]\n",
                   argv[0]);
      return 2;
    }
  }
  if (::geteuid() != 0) {
    std::fprintf(stderr, "fuse_loop_bench needs root (mount, loop devices)\n");
    return 1;
  }
  return Run(args);
}
