// An overlaybd layer blob: tar envelope → ZFile → sealed LSMT layer. Opening reads the blob's
// head and tail once each (where all metadata lives) and serves the parsers from those bytes, so
// a remote blob opens in about two range reads. Also opens bare ZFiles and plain sealed layers.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "blockstore/blob/tar_envelope.h"
#include "blockstore/file/file.h"
#include "blockstore/lsmt/sealed_layer.h"
#include "blockstore/zfile/zfile_reader.h"

namespace dadi::blockstore {

struct LayerBlobOptions {
  ZFileReaderOptions zfile;
  // Bytes fetched at each end of the blob before parsing.
  size_t head_bytes = 4096;
  size_t tail_bytes = 256 << 10;
};

// What opening cost: reads that reached the blob and the bytes they returned.
struct OpenCost {
  uint64_t reads = 0;
  uint64_t bytes = 0;
};

enum class LayerFormat { kBlob, kZFile, kSealedLsmt };

class LayerBlob {
 public:
  // Opens an overlaybd layer blob (tar). DATA_LOSS / UNIMPLEMENTED naming the blob and field.
  static absl::StatusOr<std::unique_ptr<LayerBlob>> Open(
      std::shared_ptr<const RandomAccessFile> blob, LayerBlobOptions options = {});
  // Opens a blob, a bare ZFile of a sealed layer, or a plain sealed layer, by its magic.
  static absl::StatusOr<std::unique_ptr<LayerBlob>> OpenAny(
      std::shared_ptr<const RandomAccessFile> file, LayerBlobOptions options = {});

  LayerFormat format() const { return format_; }
  // The tar entry (format kBlob only).
  const TarEntry& entry() const { return entry_; }
  // The ZFile reader (null for kSealedLsmt).
  const ZFileReader* zfile() const { return zfile_; }
  const std::shared_ptr<const SealedLayer>& layer() const { return layer_; }
  const OpenCost& open_cost() const { return cost_; }

 private:
  LayerBlob() = default;
  // Opens the ZFile `file` and the sealed layer inside it into zfile_ and layer_.
  absl::Status OpenZFileLayer(std::shared_ptr<const RandomAccessFile> file,
                              const ZFileReaderOptions& options);
  LayerFormat format_ = LayerFormat::kBlob;
  TarEntry entry_;
  const ZFileReader* zfile_ = nullptr;  // owned through layer_'s file
  std::shared_ptr<const SealedLayer> layer_;
  OpenCost cost_;
};

// Writes a layer blob: the tar head, the ZFile `zfile` (with its first 512 bytes replaced by
// `final_header` when given, so readers can skip the trailer), and the tar tail.
absl::Status WriteLayerBlob(const RandomAccessFile& zfile, const ZFileHeader* final_header,
                            WritableFile* out);

}  // namespace dadi::blockstore
