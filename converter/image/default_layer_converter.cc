// The image converter's default per-layer step: converter::ConvertLayer.
#include "converter/image/image_converter.h"
#include "converter/layer_converter.h"

namespace dadi::converter::image {

LayerConverterFn DefaultLayerConverter() {
  return [](blockstore::RandomAccessFile& tar, const std::vector<std::string>& lowers,
            const std::string& uuid, const std::string& parent_uuid, const std::string& out_path,
            const LayerOptions& o) -> absl::StatusOr<LayerResult> {
    LayerConversionOptions lo;
    lo.algorithm = o.algorithm;
    lo.level = o.level;
    lo.block_size = o.block_size;
    lo.vsize = o.vsize;
    lo.threads = o.threads;
    auto r = ConvertLayer(tar, lowers, uuid, parent_uuid, out_path, lo);
    if (!r.ok()) return r.status();
    return LayerResult{r->blob_path, r->digest, r->size, r->uuid};
  };
}

}  // namespace dadi::converter::image
