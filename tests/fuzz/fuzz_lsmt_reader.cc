// Fuzzes SealedLayer::Open on arbitrary bytes, then reads through a stack of it.
#include <cstdint>
#include <memory>
#include <string>

#include "blockstore/lsmt/layer_stack.h"
#include "blockstore/lsmt/sealed_layer.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace dadi::blockstore;
  std::shared_ptr<const RandomAccessFile> file =
      NewMemoryFile(std::string(reinterpret_cast<const char*>(data), size), "fuzz");
  auto layer = SealedLayer::Open(file);
  if (!layer.ok()) return 0;
  // The same layer twice: exercises the merge as well.
  auto stack = LayerStack::Create({*layer, *layer});
  if (!stack.ok()) return 0;
  dadi::fuzz::ReadSomeRanges(**stack, data, size);
  return 0;
}
