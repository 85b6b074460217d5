// Throughput of applying a tar layer to ext4 on a file-backed device, next to `tar -x` of the
// same tar into a directory on the same file system as a baseline.
//
//   apply_bench [--size-mb N] [--dir D] [--gzip] [--keep]
//
// The synthetic layer (synthetic_tar.h, random data) is generated once per run. Speed is MB/s of
// uncompressed tar input.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "converter/block_device.h"
#include "converter/ext4_filesystem.h"
#include "converter/tar_applier.h"
#include "tests/bench/converter/synthetic_tar.h"

using dadi::bench::ChildrenCpuSeconds;
using dadi::bench::Clock;
using dadi::bench::FileSize;
using dadi::bench::ProcessCpuSeconds;
using dadi::bench::Seconds;

int main(int argc, char** argv) {
  uint64_t size_mb = 1024;
  std::string base = std::getenv("TMPDIR") != nullptr ? std::getenv("TMPDIR") : "/var/tmp";
  bool gzip = false, keep = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--size-mb" && i + 1 < argc) {
      size_mb = std::strtoull(argv[++i], nullptr, 10);
    } else if (arg == "--dir" && i + 1 < argc) {
      base = argv[++i];
    } else if (arg == "--gzip") {
      gzip = true;
    } else if (arg == "--keep") {
      keep = true;
    } else {
      std::fprintf(stderr, "usage: %s [--size-mb N] [--dir D] [--gzip] [--keep]\n", argv[0]);
      return 2;
    }
  }
  std::string work = base + "/dadi-apply-bench-XXXXXX";
  if (::mkdtemp(work.data()) == nullptr) {
    std::perror("mkdtemp");
    return 1;
  }
  const std::string tar = work + (gzip ? "/layer.tar.gz" : "/layer.tar");
  const std::string image = work + "/disk.img";
  const std::string extract = work + "/extract";

  dadi::bench::SyntheticTar layer;
  auto t0 = Clock::now();
  if (!dadi::bench::WriteSyntheticTar(tar, {size_mb << 20, gzip, false}, &layer)) return 1;
  auto t1 = Clock::now();
  const uint64_t tar_bytes = FileSize(tar);
  std::printf("layer: %llu files, %.1f MiB of content, tar %.1f MiB%s (generated in %.1f s)\n",
              static_cast<unsigned long long>(layer.files), layer.bytes / 1048576.0,
              tar_bytes / 1048576.0, gzip ? " gzip" : "", Seconds(t0, t1));
  // Both runs read the tar from the page cache alike. The machine may be shared: CPU seconds
  // are printed beside wall time.

  using namespace dadi::converter;
  const uint64_t dev_size = ((size_mb << 20) * 2 + (512 << 20)) / 4096 * 4096;
  auto dev = CreateFileBlockDevice(image, dev_size);
  if (!dev.ok()) {
    std::fprintf(stderr, "%s\n", dev.status().ToString().c_str());
    return 1;
  }
  auto t2 = Clock::now();
  const double cpu0 = ProcessCpuSeconds();
  auto fs = Ext4Filesystem::Create(dev->get(), Ext4Options{});
  if (!fs.ok()) {
    std::fprintf(stderr, "%s\n", fs.status().ToString().c_str());
    return 1;
  }
  int fd = ::open(tar.c_str(), O_RDONLY | O_CLOEXEC);
  ApplyOptions options;
  options.layer_name = tar;
  auto stats = ApplyTarFd(**fs, fd, options);
  ::close(fd);
  if (!stats.ok()) {
    std::fprintf(stderr, "%s\n", stats.status().ToString().c_str());
    return 1;
  }
  auto t3 = Clock::now();
  absl::Status closed = (*fs)->Close();
  auto t4 = Clock::now();
  const double cpu1 = ProcessCpuSeconds();
  if (!closed.ok()) {
    std::fprintf(stderr, "%s\n", closed.ToString().c_str());
    return 1;
  }
  const double mb = stats->tar_bytes / 1e6;
  std::printf(
      "dadi apply:  %.2f s apply + %.2f s close/flush = %.1f MB/s of tar input "
      "(%.1f MB/s without the final fdatasync)\n",
      Seconds(t2, t3), Seconds(t3, t4), mb / Seconds(t2, t4), mb / Seconds(t2, t3));
  std::printf("             %.2f s of CPU = %.1f MB/s per CPU second\n", cpu1 - cpu0,
              mb / (cpu1 - cpu0));

  ::mkdir(extract.c_str(), 0755);
  std::string cmd = "tar -x -f '" + tar + "' -C '" + extract + "' && sync -f '" + extract + "'";
  const double ccpu0 = ChildrenCpuSeconds();
  auto t5 = Clock::now();
  int rc = std::system(cmd.c_str());
  auto t6 = Clock::now();
  const double ccpu1 = ChildrenCpuSeconds();
  if (rc != 0) {
    std::fprintf(stderr, "baseline tar -x failed (%d)\n", rc);
  } else {
    std::printf("tar -x:      %.2f s = %.1f MB/s of tar input (baseline, into %s)\n",
                Seconds(t5, t6), mb / Seconds(t5, t6), base.c_str());
    std::printf("             %.2f s of CPU = %.1f MB/s per CPU second\n", ccpu1 - ccpu0,
                mb / (ccpu1 - ccpu0));
  }
  if (!keep) {
    std::string rm = "rm -rf '" + work + "'";
    if (std::system(rm.c_str()) != 0) std::fprintf(stderr, "could not remove %s\n", work.c_str());
  } else {
    std::printf("kept %s\n", work.c_str());
  }
  return 0;
}
