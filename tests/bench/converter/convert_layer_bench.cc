// End-to-end speed of converting one tar layer into an overlaybd layer blob (ConvertLayer:
// apply into ext4 on an LSMT writable layer, commit, ZFile compression on all cores, tar
// envelope, sha256, fsync), next to baselines measured in the same run on the same tar:
// `tar -x` into a directory (+ sync) and `gzip -1` of the tar.
//
//   convert_layer_bench [--size-mb N] [--dir D] [--algorithm lz4|zstd] [--threads N] [--keep]
//
// The synthetic layer: many small files (1 B .. 64 KiB, 100 to a directory, some symlinks and
// hard links) holding 60% of the bytes, and a few big files (32 .. 256 MiB) holding the rest.
// File data is half text-like (compressible) and half random, so compression does real work.
// Speed is MB/s (10^6 bytes) of uncompressed tar input.
#include <archive.h>
#include <archive_entry.h>
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

#include "blockstore/file/file.h"
#include "converter/layer_converter.h"

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
};

// 4 MiB of content: 64 KiB pieces alternately random and text-like.
std::vector<char> MakeData() {
  Rng rng;
  std::vector<char> d(4 << 20);
  static const char* words[] = {"lib",   "usr",  "share", "the ",    "static ", "int ",
                                "void ", "{\n",  "}\n",   "return ", "0x",      "include ",
                                "data",  "conf", "=",     "\n"};
  for (size_t piece = 0; piece < d.size(); piece += 65536) {
    if ((piece / 65536) % 2 == 0) {
      for (size_t i = piece; i < piece + 65536; i += 8) {
        uint64_t v = rng.Next();
        std::memcpy(&d[i], &v, 8);
      }
    } else {
      size_t i = piece;
      while (i < piece + 65536) {
        const char* w = words[rng.Next() % 16];
        for (; *w != 0 && i < piece + 65536; ++w) d[i++] = *w;
      }
    }
  }
  return d;
}

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
  uint64_t done = 0;
  while (ok && done < size) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(size - done, 1 << 20));
    ok = archive_write_data(a, data + (done % (3 << 20)), n) == static_cast<la_ssize_t>(n);
    done += n;
  }
  archive_entry_free(e);
  return ok;
}

bool MakeTar(const std::string& path, uint64_t total, uint64_t* files) {
  struct archive* a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  if (archive_write_open_filename(a, path.c_str()) != ARCHIVE_OK) {
    std::fprintf(stderr, "open %s: %s\n", path.c_str(), archive_error_string(a));
    return false;
  }
  Rng rng;
  std::vector<char> data = MakeData();
  const uint64_t small_budget = total * 6 / 10;
  uint64_t dirs = 0, bytes = 0;
  bool ok = true;
  std::string dir;
  while (ok && bytes < small_budget) {
    if (*files % 100 == 0) {
      dir = "usr/share/pkg" + std::to_string(dirs / 30) + "/d" + std::to_string(dirs);
      ++dirs;
      ok = WriteEntry(a, dir, AE_IFDIR, 0, nullptr);
    }
    uint64_t size = rng.Next() % 4 == 0 ? rng.Next() % (64 << 10) : rng.Next() % (6 << 10);
    std::string name = dir + "/file" + std::to_string(*files) + ".dat";
    ok = ok && WriteEntry(a, name, AE_IFREG, size, data.data() + (rng.Next() % (1 << 20)));
    if (*files % 50 == 7) {
      ok = ok && WriteEntry(a, name + ".lnk", AE_IFLNK, 0, nullptr, "target-of-symlink");
    }
    if (*files % 200 == 9) {
      ok = ok && WriteEntry(a, name + ".hard", AE_IFREG, 0, nullptr, name.c_str(), true);
    }
    bytes += size;
    ++*files;
  }
  uint64_t big = 0;
  while (ok && bytes < total) {
    uint64_t size = std::min<uint64_t>(total - bytes, (uint64_t{32} << 20) << (big % 4));
    ok = WriteEntry(a, "opt/big/blob" + std::to_string(big++), AE_IFREG, size, data.data());
    bytes += size;
    ++*files;
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

// Runs a shell command; returns wall seconds and child CPU seconds, or a negative time.
double Timed(const std::string& cmd, double* cpu) {
  const double c0 = ChildrenCpu();
  auto t0 = Clock::now();
  int rc = std::system(cmd.c_str());
  auto t1 = Clock::now();
  *cpu = ChildrenCpu() - c0;
  if (rc != 0) {
    std::fprintf(stderr, "baseline failed (%d): %s\n", rc, cmd.c_str());
    return -1;
  }
  return Seconds(t0, t1);
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t size_mb = 1024;
  std::string base = std::getenv("TMPDIR") != nullptr ? std::getenv("TMPDIR") : "/var/tmp";
  bool keep = false;
  dadi::converter::LayerConversionOptions options;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--size-mb" && i + 1 < argc) {
      size_mb = std::strtoull(argv[++i], nullptr, 10);
    } else if (arg == "--dir" && i + 1 < argc) {
      base = argv[++i];
    } else if (arg == "--algorithm" && i + 1 < argc) {
      options.algorithm = argv[++i];
    } else if (arg == "--threads" && i + 1 < argc) {
      options.threads = std::atoi(argv[++i]);
    } else if (arg == "--keep") {
      keep = true;
    } else {
      std::fprintf(stderr,
                   "usage: %s [--size-mb N] [--dir D] [--algorithm lz4|zstd] [--threads N] "
                   "[--keep]\n",
                   argv[0]);
      return 2;
    }
  }
  std::string work = base + "/dadi-convert-bench-XXXXXX";
  if (::mkdtemp(work.data()) == nullptr) {
    std::perror("mkdtemp");
    return 1;
  }
  const std::string tar = work + "/layer.tar";
  const std::string blob = work + "/layer.commit";
  const std::string extract = work + "/extract";

  uint64_t files = 0;
  auto g0 = Clock::now();
  if (!MakeTar(tar, size_mb << 20, &files)) return 1;
  auto g1 = Clock::now();
  auto tar_file = dadi::blockstore::OpenLocalFile(tar);
  if (!tar_file.ok()) {
    std::fprintf(stderr, "%s\n", tar_file.status().ToString().c_str());
    return 1;
  }
  const double mb = (*tar_file)->Size() / 1e6;
  std::printf("layer: %llu files, tar %.1f MB (generated in %.1f s)\n",
              static_cast<unsigned long long>(files), mb, Seconds(g0, g1));

  dadi::converter::LayerConversionTimings timings;
  options.timings = &timings;
  const double cpu0 = ProcessCpu();
  auto t0 = Clock::now();
  auto r = dadi::converter::ConvertLayer(**tar_file, {}, "bbbbbbbb-0000-4000-8000-000000000000", "",
                                         blob, options);
  auto t1 = Clock::now();
  const double cpu1 = ProcessCpu();
  if (!r.ok()) {
    std::fprintf(stderr, "%s\n", r.status().ToString().c_str());
    return 1;
  }
  const double conv = Seconds(t0, t1);
  std::printf(
      "dadi ConvertLayer (%s): %.2f s = %.1f MB/s of tar input; %.2f s CPU; blob %.1f MB "
      "(%.1f%% of the tar)\n",
      options.algorithm.c_str(), conv, mb / conv, cpu1 - cpu0, r->size / 1e6,
      100.0 * r->size / (*tar_file)->Size());

  std::printf(
      "  wall: apply %.2f s, commit+compress+fsync %.2f s, sha256 %.2f s\n"
      "  CPU:  apply %.2f s, commit+compress+fsync %.2f s, sha256 %.2f s\n",
      timings.apply, timings.commit, timings.digest, timings.apply_cpu, timings.commit_cpu,
      timings.digest_cpu);
  // On an idle machine with N cores the single-threaded phases take their CPU time and the
  // compression its CPU time / N: the speed this run's CPU work would give without contention.
  const int cores =
      options.threads > 0 ? options.threads : static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
  const double ideal = timings.apply_cpu + timings.commit_cpu / cores + timings.digest_cpu;
  std::printf("  CPU-bound estimate on %d idle cores: %.2f s = %.1f MB/s\n", cores, ideal,
              mb / ideal);

  ::mkdir(extract.c_str(), 0755);
  double xcpu = 0, zcpu = 0;
  double x =
      Timed("tar -x -f '" + tar + "' -C '" + extract + "' && sync -f '" + extract + "'", &xcpu);
  double z = Timed("gzip -1 -c '" + tar + "' > '" + work + "/layer.tar.gz' && sync -f '" + work +
                       "/layer.tar.gz'",
                   &zcpu);
  if (x > 0) std::printf("tar -x + sync:   %.2f s = %.1f MB/s (%.2f s CPU)\n", x, mb / x, xcpu);
  if (z > 0) std::printf("gzip -1 + sync:  %.2f s = %.1f MB/s (%.2f s CPU)\n", z, mb / z, zcpu);
  if (x > 0 && z > 0) {
    std::printf("tar -x then gzip -1: %.2f s = %.1f MB/s; dadi / baseline = %.2f\n", x + z,
                mb / (x + z), (x + z) / conv);
  }
  if (!keep) {
    std::string rm = "rm -rf '" + work + "'";
    if (std::system(rm.c_str()) != 0) std::fprintf(stderr, "could not remove %s\n", work.c_str());
  } else {
    std::printf("kept %s\n", work.c_str());
  }
  return 0;
}
