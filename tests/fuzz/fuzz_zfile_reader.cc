// Fuzzes ZFileReader::Open and Pread on arbitrary bytes.
#include <cstdint>
#include <memory>
#include <string>

#include "blockstore/zfile/zfile_reader.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace dadi::blockstore;
  std::shared_ptr<const RandomAccessFile> file =
      NewMemoryFile(std::string(reinterpret_cast<const char*>(data), size), "fuzz");
  ZFileReaderOptions o;
  o.cache_bytes = 1 << 20;
  auto r = ZFileReader::Open(file, o);
  if (!r.ok()) return 0;
  dadi::fuzz::ReadSomeRanges(**r, data, size);
  if ((*r)->Size() <= (16 << 20)) (void)(*r)->VerifyAll();
  return 0;
}
