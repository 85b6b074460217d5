// Throughput of applying a tar layer to ext4 on a file-backed device, next to `tar -x` of the
// same tar into a directory on the same file system as a baseline.
//
//   apply_bench [--size-mb N] [--dir D] [--gzip] [--keep]
//
// The synthetic layer (generated once per run): many small files (1 B .. 64 KiB, 100 to a
// directory, some symlinks and hard links) holding 60% of the bytes, and a few big files
// (32 MiB .. 256 MiB) holding the rest. Speed is MB/s of uncompressed tar input.
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "converter/block_device.h"
#include "converter/ext4_filesystem.h"
#include "converter/tar_applier.h"

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

struct Rng {
  uint64_t s = 0x9e3779b97f4a7c15ULL;
  uint64_t Next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  }
  void Fill(char* p, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
      uint64_t v = Next();
      std::memcpy(p + i, &v, 8);
    }
    for (; i < n; ++i) p[i] = static_cast<char>(Next());
  }
};

struct Layer {
  uint64_t files = 0, bytes = 0;
};

bool WriteEntry(struct archive* a, const std::string& path, unsigned type, uint64_t size,
                const char* data, const char* link = nullptr, bool hard = false) {
  struct archive_entry* e = archive_entry_new();
  archive_entry_set_pathname(e, path.c_str());
  archive_entry_set_filetype(e, type);
  archive_entry_set_perm(e, type == AE_IFDIR ? 0755 : 0644);
  archive_entry_set_mtime(e, 1700000000, 0);
  archive_entry_set_size(e, static_cast<la_int64_t>(size));
  if (link != nullptr && hard) archive_entry_set_hardlink(e, link);
  if (link != nullptr && !hard) archive_entry_set_symlink(e, link);
  bool ok = archive_write_header(a, e) == ARCHIVE_OK;
  if (ok && size > 0) {
    uint64_t done = 0;
    while (ok && done < size) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(size - done, 1 << 20));
      ok = archive_write_data(a, data, n) == static_cast<la_ssize_t>(n);
      done += n;
    }
  }
  archive_entry_free(e);
  return ok;
}

bool MakeTar(const std::string& path, uint64_t total, bool gzip, Layer* layer) {
  struct archive* a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  if (gzip) archive_write_add_filter_gzip(a);
  if (archive_write_open_filename(a, path.c_str()) != ARCHIVE_OK) {
    std::fprintf(stderr, "open %s: %s\n", path.c_str(), archive_error_string(a));
    return false;
  }
  Rng rng;
  std::vector<char> data(1 << 20);
  rng.Fill(data.data(), data.size());
  const uint64_t small_budget = total * 6 / 10;
  uint64_t dirs = 0;
  bool ok = true;
  std::string dir;
  while (ok && layer->bytes < small_budget) {
    if (layer->files % 100 == 0) {
      dir = "usr/share/pkg" + std::to_string(dirs / 30) + "/d" + std::to_string(dirs);
      ++dirs;
      ok = WriteEntry(a, dir, AE_IFDIR, 0, nullptr);
    }
    // Sizes skewed small like real images: mostly a few KiB, some up to 64 KiB.
    uint64_t size = rng.Next() % 4 == 0 ? rng.Next() % (64 << 10) : rng.Next() % (6 << 10);
    std::string name = dir + "/file" + std::to_string(layer->files) + ".dat";
    ok = ok && WriteEntry(a, name, AE_IFREG, size, data.data());
    if (layer->files % 50 == 7) {
      ok = ok && WriteEntry(a, name + ".lnk", AE_IFLNK, 0, nullptr, "target-of-symlink");
    }
    if (layer->files % 200 == 9) {
      ok = ok && WriteEntry(a, name + ".hard", AE_IFREG, 0, nullptr, name.c_str(), true);
    }
    layer->bytes += size;
    ++layer->files;
  }
  uint64_t big_index = 0;
  while (ok && layer->bytes < total) {
    uint64_t size =
        std::min<uint64_t>(total - layer->bytes, (uint64_t{32} << 20) << (big_index % 4));
    ok = WriteEntry(a, "opt/big/blob" + std::to_string(big_index++), AE_IFREG, size, data.data());
    layer->bytes += size;
    ++layer->files;
  }
  ok = archive_write_close(a) == ARCHIVE_OK && ok;
  archive_write_free(a);
  return ok;
}

double ProcessCpu() {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

double ChildrenCpu() {
  struct rusage ru;
  getrusage(RUSAGE_CHILDREN, &ru);
  return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
         ru.ru_stime.tv_usec / 1e6;
}

uint64_t FileSize(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

}  // namespace

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

  Layer layer;
  auto t0 = Clock::now();
  if (!MakeTar(tar, size_mb << 20, gzip, &layer)) return 1;
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
  const double cpu0 = ProcessCpu();
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
  const double cpu1 = ProcessCpu();
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
  const double ccpu0 = ChildrenCpu();
  auto t5 = Clock::now();
  int rc = std::system(cmd.c_str());
  auto t6 = Clock::now();
  const double ccpu1 = ChildrenCpu();
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
