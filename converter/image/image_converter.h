// `dadi convert`: an OCI/Docker image (or an index of them) into an overlaybd image. For every
// platform: layers are applied one by one into overlaybd layer blobs (the per-layer work is a
// StagedLayerConverter, normally converter::ApplyLayer + CompressLayer, the compression of a
// layer overlapping the apply of the next; or a one-call LayerConverterFn), the config's
// diff_ids and the manifest's layer descriptors are rewritten, and blobs, config and manifest
// are written to the destination. See docs/converter.md, "dadi convert".
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "blockstore/file/file.h"
#include "blockstore/remote/manifest.h"
#include "converter/image/dedup_db.h"
#include "converter/image/image_store.h"

namespace dadi::converter::image {

inline constexpr absl::string_view kOverlaybdDigestAnnotation =
    "containerd.io/snapshot/overlaybd/blob-digest";
inline constexpr absl::string_view kOverlaybdSizeAnnotation =
    "containerd.io/snapshot/overlaybd/blob-size";
inline constexpr absl::string_view kOverlaybdVersionAnnotation =
    "containerd.io/snapshot/overlaybd/version";
inline constexpr absl::string_view kOverlaybdVersion = "0.1.0";
inline constexpr absl::string_view kDadiRepositoryAnnotation =
    "containerd.io/snapshot/dadi/repository";
inline constexpr absl::string_view kDockerLayerTarMediaType =
    "application/vnd.docker.image.rootfs.diff.tar";

// Mirrors converter::LayerConversionOptions.
struct LayerOptions {
  std::string algorithm = "lz4";
  int level = 0;
  uint32_t block_size = 4096;
  uint64_t vsize = 64ull << 30;
  int threads = 0;
  // The options that change the output, as the dedup key ("lz4/0/4096/68719476736").
  std::string Key() const;
};

// Mirrors converter::ConvertedLayer.
struct LayerResult {
  std::string blob_path;
  std::string digest;
  uint64_t size = 0;
  std::string uuid;
};

// Applies one tar layer on top of the blobs below it and writes the layer blob to out_path.
using LayerConverterFn = std::function<absl::StatusOr<LayerResult>(
    blockstore::RandomAccessFile& tar, const std::vector<std::string>& lower_blob_paths,
    const std::string& uuid, const std::string& parent_uuid, const std::string& out_path,
    const LayerOptions& options)>;

// A layer conversion in two stages (normally converter::ApplyLayer and CompressLayer), so that
// layer i is compressed on a thread of its own while layer i+1 is applied:
// `apply` applies the tar over the lower layers (blobs or sealed files of earlier `apply` calls)
// and writes an uncompressed sealed LSMT file at `sealed_path`; `compress` turns that file into
// the layer blob at `out_path`. `compress` runs on another thread than `apply`, one call at a
// time.
using LayerApplyFn = std::function<absl::Status(
    blockstore::RandomAccessFile& tar, const std::vector<std::string>& lower_paths,
    const std::string& uuid, const std::string& parent_uuid, const std::string& sealed_path,
    const LayerOptions& options)>;
using LayerCompressFn = std::function<absl::StatusOr<LayerResult>(
    const std::string& sealed_path, const std::string& uuid, const std::string& out_path,
    const LayerOptions& options)>;
struct StagedLayerConverter {
  LayerApplyFn apply;
  LayerCompressFn compress;
};

// converter::ApplyLayer + converter::CompressLayer.
StagedLayerConverter DefaultLayerConverter();

// What happens to each layer, for a progress display. Calls come from one thread at a time.
struct LayerEvent {
  std::string platform;  // "linux/amd64", empty for a single-manifest image
  int index = 0;         // 0-based
  int total = 0;
  std::string source_digest;
  enum State { kFetching, kApplying, kReused, kUploading, kDone } state = kFetching;
  uint64_t bytes_in = 0;     // source layer size
  uint64_t bytes_out = 0;    // blob size (from kApplying's end on)
  std::string push_outcome;  // kDone: "uploaded", "exists", "mounted"
};

class ProgressSink {
 public:
  virtual ~ProgressSink() = default;
  virtual void OnLayer(const LayerEvent& event) = 0;
};
// One line per event.
std::unique_ptr<ProgressSink> NewPlainProgress(FILE* out);
// A bar per layer redrawn in place (for a terminal).
std::unique_ptr<ProgressSink> NewTerminalProgress(FILE* out);

struct ConvertOptions {
  LayerOptions layer;
  std::optional<blockstore::Platform> platform;  // only this platform of an index
  std::string store_dir;                         // converted blobs kept for dedup (required)
  std::string work_dir;     // downloads and archives (required; caller removes it)
  size_t upload_queue = 2;  // converted layers waiting for upload at most
};

struct ConvertSummary {
  int layers = 0;
  int reused = 0;  // layers taken from the dedup database
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
  double seconds = 0;
  PushStats pushes;    // layer blobs
  std::string digest;  // of the top manifest or index written
  std::string media_type;
  std::string ToJson() const;
};

class ImageConverter {
 public:
  // `db` and `progress` may be null. With a LayerConverterFn each layer is converted in one
  // call (nothing overlaps but the fetch and the upload); with a StagedLayerConverter the
  // compression of layer i overlaps the apply of layer i+1.
  ImageConverter(ConvertOptions options, LayerConverterFn layer_converter, DedupDb* db,
                 ProgressSink* progress);
  ImageConverter(ConvertOptions options, StagedLayerConverter staged, DedupDb* db,
                 ProgressSink* progress);
  absl::StatusOr<ConvertSummary> Convert(ImageSource& source, ImageDestination& dest);

 private:
  absl::StatusOr<ManifestDocument> ConvertManifest(ImageSource& source, ImageDestination& dest,
                                                   const ManifestDocument& doc,
                                                   const std::string& platform,
                                                   ConvertSummary* summary);

  ConvertOptions options_;
  LayerConverterFn layer_converter_;  // or
  StagedLayerConverter staged_;
  DedupDb* db_;
  ProgressSink* progress_;
};

// chain_id(0) = diff_id(0); chain_id(n) = sha256(chain_id(n-1) + " " + diff_id(n)).
std::vector<std::string> ChainIds(const std::vector<std::string>& diff_ids);
// A uuid text (8-4-4-4-12 lowercase hex, version 5 style bits) derived from `seed`.
std::string DeterministicUuid(absl::string_view seed);
// "os/arch[/variant]", for messages and summaries.
std::string PlatformString(const blockstore::Platform& p);

}  // namespace dadi::converter::image
