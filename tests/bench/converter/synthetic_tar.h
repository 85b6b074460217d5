// What the converter benches share: a synthetic tar layer and the clocks they read.
//
// The layer: many small files (1 B .. 64 KiB, 100 to a directory, some symlinks and hard links)
// holding 60% of the bytes, and a few big files (32 .. 256 MiB) holding the rest. Its file data
// is random, or half random and half text-like so that compression does real work.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace dadi::bench {

struct SyntheticTarOptions {
  uint64_t total_bytes = 0;   // of file content
  bool gzip = false;          // a .tar.gz instead of a .tar
  bool compressible = false;  // half the data text-like instead of all random
};

struct SyntheticTar {
  uint64_t files = 0;  // entries with content, links included
  uint64_t bytes = 0;  // of file content
};

// Writes the layer to `path`; false (with the reason on stderr) on failure.
bool WriteSyntheticTar(const std::string& path, const SyntheticTarOptions& options,
                       SyntheticTar* out);

using Clock = std::chrono::steady_clock;
double Seconds(Clock::time_point a, Clock::time_point b);
double ProcessCpuSeconds();   // of this process
double ChildrenCpuSeconds();  // of its waited-for children (user + system)
uint64_t FileSize(const std::string& path);

}  // namespace dadi::bench
