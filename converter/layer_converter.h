// One OCI tar layer → one overlaybd layer blob: the layers below are opened as an LSMT stack, a
// writable LSMT layer goes on top, the ext4 file system on the stack is created (first layer)
// or opened, the tar applied, and the writable layer is committed as a sealed layer, compressed
// as a ZFile and wrapped in the tar envelope. See docs/converter.md, "Layer conversion".
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "blockstore/file/file.h"
#include "blockstore/lsmt/writable_layer.h"
#include "converter/block_device.h"

namespace dadi::converter {

// Where the time of one conversion went (wall seconds), for benchmarks and progress.
struct LayerConversionTimings {
  double apply = 0;   // tar → ext4 on the writable layer, file system closed
  double commit = 0;  // sealed layer → ZFile → blob file, fsynced
  double digest = 0;  // sha256 of the blob
  // CPU seconds of the process in each phase (the machine may be shared: wall time alone
  // says little).
  double apply_cpu = 0, commit_cpu = 0, digest_cpu = 0;
  // When the stages ran: the apply (ApplyLayer: with the seal into the sealed file) and the
  // compression (commit or CompressLayer, with the digest). Stages a function does not run stay
  // at the epoch.
  std::chrono::steady_clock::time_point apply_start, apply_end, compress_start, compress_end;
};

struct LayerConversionOptions {
  std::string algorithm = "lz4";              // lz4 | zstd
  int level = 0;                              // 0 = library default
  uint32_t block_size = 4096;                 // ZFile block size
  uint64_t vsize = 64ull << 30;               // virtual disk size, used by the first layer only
  int threads = 0;                            // compression threads, 0 = all cores
  LayerConversionTimings* timings = nullptr;  // filled in when given
};

struct ConvertedLayer {
  std::string blob_path;  // the overlaybd layer blob written
  std::string digest;     // "sha256:..." of the blob
  uint64_t size = 0;
  std::string uuid;
};

// Converts `tar` (plain, gzip or zstd) applied over the blobs `lower_blob_paths` (bottom first;
// overlaybd layer blobs, bare ZFiles or sealed LSMT files) into a layer blob at `out_path`
// (written to a temporary name beside it, fsynced, renamed). `uuid`/`parent_uuid` go into the
// LSMT header and trailer (an empty parent is written as the zero uuid, as overlaybd does).
// Deterministic: the same inputs and options give a byte-identical blob.
absl::StatusOr<ConvertedLayer> ConvertLayer(blockstore::RandomAccessFile& tar,
                                            const std::vector<std::string>& lower_blob_paths,
                                            const std::string& uuid, const std::string& parent_uuid,
                                            const std::string& out_path,
                                            const LayerConversionOptions& options);

// ConvertLayer in two stages, so that a pipeline can compress layer N on one thread while layer
// N+1 is applied on another (over layer N's sealed file):
//
// ApplyLayer applies `tar` over `lower_blob_paths` (as ConvertLayer) and commits the writable
// layer as an uncompressed sealed LSMT file at `sealed_path` (temporary name beside it, renamed;
// not fsynced: it is a temporary of the conversion, the caller removes it). The file is a valid
// lower layer for the next ApplyLayer or ConvertLayer. Timings: apply (with the seal).
struct SealedLayerFile {
  std::string path;
  uint64_t size = 0;
  std::string uuid;
};
absl::StatusOr<SealedLayerFile> ApplyLayer(blockstore::RandomAccessFile& tar,
                                           const std::vector<std::string>& lower_blob_paths,
                                           const std::string& uuid, const std::string& parent_uuid,
                                           const std::string& sealed_path,
                                           const LayerConversionOptions& options);
// CompressLayer compresses the sealed file of ApplyLayer into the layer blob at `out_path`
// (fsynced, renamed) and hashes it: byte-identical to ConvertLayer's blob for the same input and
// options (the ZFile depends on the byte stream only). `uuid` is the layer's, for the result.
// Timings: commit (read + compress + write) and digest. Thread-safe against ApplyLayer.
absl::StatusOr<ConvertedLayer> CompressLayer(const std::string& sealed_path,
                                             const std::string& uuid, const std::string& out_path,
                                             const LayerConversionOptions& options);

// Opens a stack of layer blobs (bottom first) read-only: the flat virtual disk.
absl::StatusOr<std::shared_ptr<const blockstore::RandomAccessFile>> OpenLayerStack(
    const std::vector<std::string>& blob_paths);

// A BlockDevice over a writable LSMT layer stacked on read-only layers: reads see the writable
// layer first, then `lower` (may be null: zeros); writes go to the writable layer only.
class LsmtBlockDevice final : public BlockDevice {
 public:
  LsmtBlockDevice(std::shared_ptr<const blockstore::RandomAccessFile> lower,
                  blockstore::WritableLayer* top);
  uint64_t Size() const override;
  absl::Status Pread(uint64_t offset, size_t n, char* buf) override;
  absl::Status Pwrite(uint64_t offset, absl::string_view data) override;
  absl::Status Flush() override;
  std::string Name() const override;

 private:
  blockstore::WritableLayer* top_;
  blockstore::WritableStack stack_;
};

// A BlockDevice over a read-only file (a layer stack) whose writes stay in memory (copy on
// write), so a file system can be opened "read-write" without touching the file.
std::unique_ptr<BlockDevice> NewCopyOnWriteBlockDevice(
    std::shared_ptr<const blockstore::RandomAccessFile> file);

// The ext4 uuid and directory hash seed a first layer gets from its LSMT uuid.
std::array<uint8_t, 16> Ext4UuidFor(const std::string& layer_uuid);
std::array<uint8_t, 16> Ext4HashSeedFor(const std::string& layer_uuid);

}  // namespace dadi::converter
