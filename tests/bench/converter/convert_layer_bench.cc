// End-to-end speed of converting one tar layer into an overlaybd layer blob (ConvertLayer:
// apply into ext4 on an LSMT writable layer, commit, ZFile compression on all cores, tar
// envelope, sha256, fsync), next to baselines measured in the same run on the same tar:
// `tar -x` into a directory (+ sync) and `gzip -1` of the tar.
//
//   convert_layer_bench [--size-mb N] [--dir D] [--algorithm lz4|zstd] [--threads N] [--keep]
//
// The synthetic layer (synthetic_tar.h): its file data half text-like (compressible) and half
// random, so compression does real work. Speed is MB/s (10^6 bytes) of uncompressed tar input.
#include <sys/stat.h>
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
#include "tests/bench/converter/synthetic_tar.h"

namespace {

using dadi::bench::ChildrenCpuSeconds;
using dadi::bench::Clock;
using dadi::bench::ProcessCpuSeconds;
using dadi::bench::Seconds;

// Runs a shell command; returns wall seconds and child CPU seconds, or a negative time.
double Timed(const std::string& cmd, double* cpu) {
  const double c0 = ChildrenCpuSeconds();
  auto t0 = Clock::now();
  int rc = std::system(cmd.c_str());
  auto t1 = Clock::now();
  *cpu = ChildrenCpuSeconds() - c0;
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

  dadi::bench::SyntheticTar layer;
  auto g0 = Clock::now();
  if (!dadi::bench::WriteSyntheticTar(tar, {size_mb << 20, false, true}, &layer)) return 1;
  auto g1 = Clock::now();
  auto tar_file = dadi::blockstore::OpenLocalFile(tar);
  if (!tar_file.ok()) {
    std::fprintf(stderr, "%s\n", tar_file.status().ToString().c_str());
    return 1;
  }
  const double mb = (*tar_file)->Size() / 1e6;
  std::printf("layer: %llu files, tar %.1f MB (generated in %.1f s)\n",
              static_cast<unsigned long long>(layer.files), mb, Seconds(g0, g1));

  dadi::converter::LayerConversionTimings timings;
  options.timings = &timings;
  const double cpu0 = ProcessCpuSeconds();
  auto t0 = Clock::now();
  auto r = dadi::converter::ConvertLayer(**tar_file, {}, "bbbbbbbb-0000-4000-8000-000000000000", "",
                                         blob, options);
  auto t1 = Clock::now();
  const double cpu1 = ProcessCpuSeconds();
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
