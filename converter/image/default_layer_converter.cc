// The image converter's default per-layer steps: converter::ApplyLayer, then
// converter::CompressLayer (on the image converter's compression thread).
#include "converter/image/image_converter.h"
#include "converter/layer_converter.h"

namespace dadi::converter::image {
namespace {

LayerConversionOptions ToLayerConversionOptions(const LayerOptions& o) {
  LayerConversionOptions lo;
  lo.algorithm = o.algorithm;
  lo.level = o.level;
  lo.block_size = o.block_size;
  lo.vsize = o.vsize;
  lo.threads = o.threads;
  return lo;
}

}  // namespace

StagedLayerConverter DefaultLayerConverter() {
  StagedLayerConverter c;
  c.apply = [](blockstore::RandomAccessFile& tar, const std::vector<std::string>& lowers,
               const std::string& uuid, const std::string& parent_uuid,
               const std::string& sealed_path, const LayerOptions& o) -> absl::Status {
    return ApplyLayer(tar, lowers, uuid, parent_uuid, sealed_path, ToLayerConversionOptions(o))
        .status();
  };
  c.compress = [](const std::string& sealed_path, const std::string& uuid,
                  const std::string& out_path,
                  const LayerOptions& o) -> absl::StatusOr<LayerResult> {
    auto r = CompressLayer(sealed_path, uuid, out_path, ToLayerConversionOptions(o));
    if (!r.ok()) return r.status();
    return LayerResult{r->blob_path, r->digest, r->size, r->uuid};
  };
  return c;
}

}  // namespace dadi::converter::image
