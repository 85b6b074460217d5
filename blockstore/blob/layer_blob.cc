#include "blockstore/blob/layer_blob.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "blockstore/file/file_views.h"
#include "blockstore/file/stored_ranges.h"
#include "blockstore/zfile/zfile_format.h"

namespace dadi::blockstore {
namespace {

// Keeps the counting wrapper alive while giving readers the prefetched view.
absl::StatusOr<std::shared_ptr<PrefetchedFile>> Prefetch(
    const std::shared_ptr<const RandomAccessFile>& counted, const LayerBlobOptions& o) {
  auto pf = std::make_shared<PrefetchedFile>(counted);
  uint64_t size = counted->Size();
  if (size <= o.head_bytes + o.tail_bytes) {
    if (absl::Status s = pf->Preload(0, static_cast<size_t>(size)); !s.ok()) return s;
    return pf;
  }
  // Both ends in one request where the blob is remote, then read from its cache.
  if (absl::Status s =
          PrefetchStored(*counted, {{0, o.head_bytes}, {size - o.tail_bytes, o.tail_bytes}});
      !s.ok()) {
    return s;
  }
  if (absl::Status s = pf->Preload(0, o.head_bytes); !s.ok()) return s;
  if (absl::Status s = pf->Preload(size - o.tail_bytes, o.tail_bytes); !s.ok()) return s;
  return pf;
}

}  // namespace

absl::Status LayerBlob::OpenZFileLayer(std::shared_ptr<const RandomAccessFile> file,
                                       const ZFileReaderOptions& options) {
  absl::StatusOr<std::unique_ptr<ZFileReader>> z = ZFileReader::Open(std::move(file), options);
  if (!z.ok()) return z.status();
  zfile_ = z->get();
  absl::StatusOr<std::shared_ptr<const SealedLayer>> layer =
      SealedLayer::Open(std::shared_ptr<const RandomAccessFile>(*std::move(z)));
  if (!layer.ok()) return layer.status();
  layer_ = *std::move(layer);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<LayerBlob>> LayerBlob::Open(
    std::shared_ptr<const RandomAccessFile> blob, LayerBlobOptions options) {
  auto counting = std::make_shared<CountingFile>(std::move(blob));
  absl::StatusOr<std::shared_ptr<PrefetchedFile>> pf = Prefetch(counting, options);
  if (!pf.ok()) return pf.status();
  std::unique_ptr<LayerBlob> b(new LayerBlob());
  absl::StatusOr<TarEntry> entry = ReadTarEnvelope(**pf);
  if (!entry.ok()) return entry.status();
  b->entry_ = *entry;
  absl::StatusOr<std::shared_ptr<RandomAccessFile>> slice =
      NewSliceFile(*pf, entry->data_offset, entry->size);
  if (!slice.ok()) return slice.status();
  if (absl::Status s = b->OpenZFileLayer(*slice, options.zfile); !s.ok()) return s;
  b->cost_ = OpenCost{counting->reads(), counting->bytes()};
  // The metadata is parsed; keeping the prefetched tail would cost memory per layer. Later reads
  // go to the blob (through the block cache).
  (*pf)->Clear();
  return b;
}

absl::StatusOr<std::unique_ptr<LayerBlob>> LayerBlob::OpenAny(
    std::shared_ptr<const RandomAccessFile> file, LayerBlobOptions options) {
  char magic[8] = {};
  absl::StatusOr<size_t> got = file->Pread(0, sizeof(magic), magic);
  if (!got.ok()) return got.status();
  if (*got == sizeof(magic) && std::memcmp(magic, ZFileHeader::kMagic0, 8) == 0) {
    auto counting = std::make_shared<CountingFile>(std::move(file));
    std::unique_ptr<LayerBlob> b(new LayerBlob());
    b->format_ = LayerFormat::kZFile;
    if (absl::Status s = b->OpenZFileLayer(counting, options.zfile); !s.ok()) return s;
    b->cost_ = OpenCost{counting->reads(), counting->bytes()};
    return b;
  }
  if (*got == sizeof(magic) && std::memcmp(magic, LsmtHeader::kMagic0, 8) == 0) {
    auto counting = std::make_shared<CountingFile>(std::move(file));
    std::unique_ptr<LayerBlob> b(new LayerBlob());
    b->format_ = LayerFormat::kSealedLsmt;
    absl::StatusOr<std::shared_ptr<const SealedLayer>> layer = SealedLayer::Open(counting);
    if (!layer.ok()) return layer.status();
    b->layer_ = *std::move(layer);
    b->cost_ = OpenCost{counting->reads(), counting->bytes()};
    return b;
  }
  return Open(std::move(file), std::move(options));
}

absl::Status WriteLayerBlob(const RandomAccessFile& zfile, const ZFileHeader* final_header,
                            WritableFile* out) {
  const uint64_t size = zfile.Size();
  if (size < 2 * ZFileHeader::kEncodedLength) {
    return absl::InvalidArgumentError(absl::StrCat(zfile.Name(), ": too short to be a ZFile"));
  }
  if (absl::Status s = out->Append(EncodeTarEnvelopeHead(size)); !s.ok()) return s;
  std::string buf;
  uint64_t pos = 0;
  if (final_header != nullptr) {
    final_header->EncodeTo(&buf);
    if (absl::Status s = out->Append(buf); !s.ok()) return s;
    pos = ZFileHeader::kEncodedLength;
  }
  constexpr size_t kChunk = 1 << 20;
  while (pos < size) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(kChunk, size - pos));
    buf.resize(n);
    if (absl::Status s = PreadExact(zfile, pos, n, buf.data(), "ZFile"); !s.ok()) return s;
    if (absl::Status s = out->Append(buf); !s.ok()) return s;
    pos += n;
  }
  return out->Append(EncodeTarEnvelopeTail(size));
}

}  // namespace dadi::blockstore
