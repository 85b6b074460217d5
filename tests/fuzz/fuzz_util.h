// Shared by the fuzz targets: read a few bounded ranges of a file that opened, so that the read
// paths behind a successful open are fuzzed too without unbounded work.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>

#include "blockstore/file/file.h"

namespace dadi::fuzz {

inline void ReadSomeRanges(const blockstore::RandomAccessFile& f, const uint8_t* data,
                           size_t size) {
  const uint64_t total = f.Size();
  if (total == 0) return;
  std::string buf;
  // Offsets derived from the input, so the fuzzer steers them.
  for (size_t i = 0; i < 4; ++i) {
    uint64_t seed = 0;
    for (size_t k = 0; k < 8 && i * 8 + k < size; ++k) seed = (seed << 8) | data[i * 8 + k];
    uint64_t off = seed % total;
    size_t n = static_cast<size_t>(std::min<uint64_t>(total - off, 1 + seed % (256 << 10)));
    buf.resize(n);
    (void)f.Pread(off, n, buf.data());
  }
}

}  // namespace dadi::fuzz
