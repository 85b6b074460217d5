#include "tests/bench/converter/synthetic_tar.h"

#include <archive.h>
#include <archive_entry.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <vector>

namespace dadi::bench {
namespace {

// A fixed xorshift: the same layer in every run.
struct Rng {
  uint64_t s = 0x9e3779b97f4a7c15ULL;
  uint64_t Next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  }
};

// 4 MiB of content to take file data from: random, or 64 KiB pieces alternately random and
// text-like.
std::vector<char> MakeData(bool compressible) {
  Rng rng;
  std::vector<char> d(4 << 20);
  static const char* words[] = {"lib",   "usr",  "share", "the ",    "static ", "int ",
                                "void ", "{\n",  "}\n",   "return ", "0x",      "include ",
                                "data",  "conf", "=",     "\n"};
  for (size_t piece = 0; piece < d.size(); piece += 65536) {
    if (!compressible || (piece / 65536) % 2 == 0) {
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
  for (uint64_t done = 0; ok && done < size;) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(size - done, 1 << 20));
    ok = archive_write_data(a, data, n) == static_cast<la_ssize_t>(n);
    done += n;
  }
  archive_entry_free(e);
  return ok;
}

}  // namespace

bool WriteSyntheticTar(const std::string& path, const SyntheticTarOptions& options,
                       SyntheticTar* out) {
  struct archive* a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  if (options.gzip) archive_write_add_filter_gzip(a);
  if (archive_write_open_filename(a, path.c_str()) != ARCHIVE_OK) {
    std::fprintf(stderr, "open %s: %s\n", path.c_str(), archive_error_string(a));
    archive_write_free(a);
    return false;
  }
  Rng rng;
  const std::vector<char> data = MakeData(options.compressible);
  const uint64_t total = options.total_bytes;
  const uint64_t small_budget = total * 6 / 10;
  uint64_t dirs = 0;
  bool ok = true;
  std::string dir;
  while (ok && out->bytes < small_budget) {
    if (out->files % 100 == 0) {
      dir = "usr/share/pkg" + std::to_string(dirs / 30) + "/d" + std::to_string(dirs);
      ++dirs;
      ok = WriteEntry(a, dir, AE_IFDIR, 0, nullptr);
    }
    // Sizes skewed small like real images: mostly a few KiB, some up to 64 KiB.
    const uint64_t size = rng.Next() % 4 == 0 ? rng.Next() % (64 << 10) : rng.Next() % (6 << 10);
    const std::string name = dir + "/file" + std::to_string(out->files) + ".dat";
    ok = ok && WriteEntry(a, name, AE_IFREG, size, data.data() + (rng.Next() % (1 << 20)));
    if (out->files % 50 == 7) {
      ok = ok && WriteEntry(a, name + ".lnk", AE_IFLNK, 0, nullptr, "target-of-symlink");
    }
    if (out->files % 200 == 9) {
      ok = ok && WriteEntry(a, name + ".hard", AE_IFREG, 0, nullptr, name.c_str(), true);
    }
    out->bytes += size;
    ++out->files;
  }
  for (uint64_t big = 0; ok && out->bytes < total; ++big) {
    const uint64_t size = std::min<uint64_t>(total - out->bytes, (uint64_t{32} << 20) << (big % 4));
    ok = WriteEntry(a, "opt/big/blob" + std::to_string(big), AE_IFREG, size, data.data());
    out->bytes += size;
    ++out->files;
  }
  ok = archive_write_close(a) == ARCHIVE_OK && ok;
  archive_write_free(a);
  if (!ok) std::fprintf(stderr, "writing %s failed\n", path.c_str());
  return ok;
}

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

double ProcessCpuSeconds() {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

double ChildrenCpuSeconds() {
  struct rusage ru;
  getrusage(RUSAGE_CHILDREN, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

uint64_t FileSize(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

}  // namespace dadi::bench
