// A startup trace's stored ranges in dadi-blockd: locating them for `dadi trace save` (the
// trace's `stored` key), and filling the node cache from the trace's pack, the blob that holds
// their bytes back to back (blockstore/remote/startup_trace.h). One GET of a pack replaces a
// multi-range GET per few dozen ranges; docker-registry answers each range of those with a
// 4 MiB read of its blob file, so a cold start made it read most of every layer from disk.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "blockstore/blockd/image_opener.h"
#include "blockstore/file/file.h"
#include "blockstore/remote/startup_trace.h"

namespace dadi::blockstore::blockd {

// The bytes of `image`'s layer blobs that store `ranges` of its disk, in the order the ranges
// first reach them, rounded out to the blob's node-cache unit (what a prefetch fetches anyway);
// a unit appears once, where it is first needed, and neighbours in that order are merged.
std::vector<StoredRange> LocateStoredRanges(const OpenImage& image,
                                            const std::vector<ByteRange>& ranges);

struct PackFillResult {
  uint64_t pack_bytes = 0;  // bytes of the pack
};

// Puts the bytes of `pack` (the `stored` ranges back to back, checked against its digest by the
// caller) into the node cache of `image`'s layers: every missing unit the pack holds whole is
// copied from it, the others are fetched from the registry. INVALID_ARGUMENT, before anything is
// stored, when the pack's size is not the ranges' or a range names a blob that is not a layer of
// the image or lies outside it (the trace was recorded on another image).
absl::StatusOr<PackFillResult> FillFromPack(const OpenImage& image,
                                            absl::Span<const StoredRange> stored,
                                            absl::string_view pack, const std::atomic<bool>& stop);

}  // namespace dadi::blockstore::blockd
