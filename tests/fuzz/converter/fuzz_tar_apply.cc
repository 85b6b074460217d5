// libFuzzer target: arbitrary bytes as a layer (plain, gzip or zstd tar) applied to a fresh
// ext4 on an in-memory device, then a second layer (the same bytes) over it, then close. Any
// outcome but a crash, a leak or a sanitizer report is fine: bad input must fail cleanly.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "converter/block_device.h"
#include "converter/ext4_filesystem.h"
#include "converter/tar_applier.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace dadi::converter;
  std::unique_ptr<BlockDevice> dev = NewMemoryBlockDevice(32 << 20, "fuzz");
  Ext4Options options;
  options.inode_ratio = 8192;
  auto fs = Ext4Filesystem::Create(dev.get(), options);
  if (!fs.ok()) __builtin_trap();  // creating an empty file system must always work
  ApplyOptions apply;
  apply.layer_name = "fuzz";
  apply.max_file_size = 4 << 20;
  apply.max_path_length = 4096;
  for (int layer = 0; layer < 2; ++layer) {
    size_t pos = 0;
    TarReader reader = [&](char* buf, size_t n) -> absl::StatusOr<size_t> {
      size_t k = std::min(n, size - pos);
      std::memcpy(buf, data + pos, k);
      pos += k;
      return k;
    };
    if (!ApplyTar(**fs, reader, apply).ok()) break;
  }
  (void)(*fs)->Close();
  return 0;
}
