// Fuzzes the layer blob envelope: tar headers and PAX records, then the ZFile and LSMT layer
// inside (LayerBlob::OpenAny also takes bare ZFiles and sealed layers).
#include <cstdint>
#include <memory>
#include <string>

#include "blockstore/blob/layer_blob.h"
#include "blockstore/blob/tar_envelope.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace dadi::blockstore;
  std::shared_ptr<const RandomAccessFile> file =
      NewMemoryFile(std::string(reinterpret_cast<const char*>(data), size), "fuzz");
  (void)ReadTarEnvelope(*file);
  LayerBlobOptions o;
  o.zfile.cache_bytes = 1 << 20;
  auto blob = LayerBlob::Open(file, o);
  if (!blob.ok()) return 0;
  dadi::fuzz::ReadSomeRanges(*(*blob)->layer()->shared_file(), data, size);
  return 0;
}
