#include "blockstore/blockd/image_opener.h"

#include <thread>

#include "absl/strings/str_cat.h"
#include "blockstore/remote/digest.h"
#include "blockstore/remote/reference.h"

namespace dadi::blockstore::blockd {

// The remote blob as the layer parsers see it: counts reads, and whether the blob fetched
// from the registry while a read was in progress (a miss) or not (a hit). Concurrent readers of
// one blob may see each other's fetches, so the split is approximate; the bytes are exact.
class OpenLayer::CountingBlob final : public RandomAccessFile {
 public:
  explicit CountingBlob(std::shared_ptr<RemoteBlob> remote) : remote_(std::move(remote)) {}
  uint64_t Size() const override { return remote_->Size(); }
  std::string Name() const override { return remote_->Name(); }
  absl::StatusOr<size_t> Pread(uint64_t offset, size_t n, char* buf) const override {
    const uint64_t before = remote_->Stats().fetch_requests;
    absl::StatusOr<size_t> got = remote_->Pread(offset, n, buf);
    reads_.fetch_add(1, std::memory_order_relaxed);
    if (remote_->Stats().fetch_requests != before) {
      misses_.fetch_add(1, std::memory_order_relaxed);
    } else if (got.ok()) {
      hits_.fetch_add(1, std::memory_order_relaxed);
    }
    return got;
  }
  // Lets a reader that found bad bytes (a ZFile block failing its CRC) drop the node cache's
  // copy and refetch.
  absl::Status Invalidate(uint64_t offset, uint64_t n) const override {
    return remote_->Invalidate(offset, n);
  }
  // The remote blob is where the bytes are (a prefetch fetches them there, uncounted here).
  void Locate(uint64_t offset, uint64_t n, std::vector<FileExtent>* out) const override {
    remote_->Locate(offset, n, out);
  }
  LayerCounters Counters() const {
    LayerCounters c;
    c.blob_reads = reads_.load(std::memory_order_relaxed);
    c.cache_hits = hits_.load(std::memory_order_relaxed);
    c.cache_misses = misses_.load(std::memory_order_relaxed);
    c.fetched_bytes = remote_->Stats().fetched_bytes;
    return c;
  }

 private:
  std::shared_ptr<RemoteBlob> remote_;
  mutable std::atomic<uint64_t> reads_{0}, hits_{0}, misses_{0};
};

OpenLayer::~OpenLayer() {
  // The parsers read through the blob: drop them first.
  blob_.reset();
  counting_.reset();
  remote_.reset();
  if (cache_ != nullptr) cache_->Unpin(spec_.digest);
}

LayerCounters OpenLayer::Counters() const { return counting_->Counters(); }

const RandomAccessFile& OpenLayer::raw() const { return *counting_; }

absl::StatusOr<size_t> OpenImage::Pread(uint64_t offset, size_t n, char* buf) const {
  absl::StatusOr<size_t> got = stack_->Pread(offset, n, buf);
  if (got.ok()) {
    bytes_read_.fetch_add(*got, std::memory_order_relaxed);
  } else {
    read_errors_.fetch_add(1, std::memory_order_relaxed);
  }
  return got;
}

ImageStats OpenImage::Stats() const {
  ImageStats s;
  s.bytes_read = bytes_read_.load(std::memory_order_relaxed);
  s.read_errors = read_errors_.load(std::memory_order_relaxed);
  s.open_layers = layers_.size();
  for (const auto& layer : layers_) {
    LayerCounters c = layer->Counters();
    s.bytes_fetched += c.fetched_bytes;
    s.cache_hits += c.cache_hits;
    s.cache_misses += c.cache_misses;
  }
  return s;
}

ImageOpener::ImageOpener(std::shared_ptr<const RegistryClient> client,
                         std::shared_ptr<NodeCache> cache, ImageOpenerOptions options)
    : client_(std::move(client)),
      cache_(std::move(cache)),
      options_(options),
      block_cache_(std::make_shared<BlockCache>(options.block_cache_bytes)) {}

absl::StatusOr<std::shared_ptr<const OpenLayer>> ImageOpener::OpenUncached(const LayerSpec& spec) {
  absl::StatusOr<Reference> ref = ParseReference(spec.repository);
  if (!ref.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "layer ", spec.digest, ": repository \"", spec.repository, "\": ", ref.status().message()));
  }
  if (!ref->digest.empty() || (ref->tag != "latest" && !ref->tag.empty())) {
    return absl::InvalidArgumentError(absl::StrCat("layer ", spec.digest, ": repository \"",
                                                   spec.repository,
                                                   "\" must not carry a tag or digest"));
  }
  absl::StatusOr<std::unique_ptr<RemoteBlob>> remote =
      RemoteBlob::Open(client_, *ref, spec.digest, spec.size, cache_, options_.remote);
  if (!remote.ok()) return remote.status();
  std::shared_ptr<OpenLayer> layer(new OpenLayer());
  layer->spec_ = spec;
  layer->remote_ = std::move(*remote);
  layer->counting_ = std::make_shared<OpenLayer::CountingBlob>(layer->remote_);
  // Pinned while open: the cache never evicts units of an attached image's layers.
  cache_->Pin(spec.digest);
  layer->cache_ = cache_;
  LayerBlobOptions blob_options;
  blob_options.zfile.cache = block_cache_;
  absl::StatusOr<std::unique_ptr<LayerBlob>> blob = LayerBlob::Open(layer->counting_, blob_options);
  if (!blob.ok()) {
    return absl::Status(
        blob.status().code(),
        absl::StrCat("layer ", spec.digest, " (", spec.repository, "): ", blob.status().message()));
  }
  layer->blob_ = std::move(*blob);
  return std::shared_ptr<const OpenLayer>(std::move(layer));
}

absl::StatusOr<std::shared_ptr<const OpenLayer>> ImageOpener::OpenOne(const LayerSpec& spec) {
  std::shared_ptr<Slot> slot;
  {
    absl::MutexLock lock(&mu_);
    // Forget slots whose layers are gone, so the map does not grow with every image ever seen.
    for (auto it = slots_.begin(); it != slots_.end();) {
      bool idle = false;
      if (it->second.use_count() == 1 && it->second->mu.TryLock()) {
        idle = it->second->layer.expired();
        it->second->mu.Unlock();
      }
      it = idle ? slots_.erase(it) : std::next(it);
    }
    std::shared_ptr<Slot>& s = slots_[spec.digest];
    if (s == nullptr) s = std::make_shared<Slot>();
    slot = s;
  }
  absl::MutexLock lock(&slot->mu);
  if (std::shared_ptr<const OpenLayer> open = slot->layer.lock()) {
    if (open->spec().size != spec.size) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", spec.digest, ": size ", spec.size,
                                                     " differs from the open layer's ",
                                                     open->spec().size));
    }
    return open;
  }
  absl::StatusOr<std::shared_ptr<const OpenLayer>> open = OpenUncached(spec);
  if (open.ok()) slot->layer = *open;
  return open;
}

absl::StatusOr<std::shared_ptr<const OpenImage>> ImageOpener::Open(
    const std::vector<LayerSpec>& layers) {
  if (layers.empty() || layers.size() > LayerStack::kMaxLayers) {
    return absl::InvalidArgumentError(
        absl::StrCat("an image has 1..", LayerStack::kMaxLayers, " layers, not ", layers.size()));
  }
  for (const LayerSpec& spec : layers) {
    if (absl::Status s = CheckDigest(spec.digest, "layer digest"); !s.ok()) return s;
    if (spec.size == 0) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", spec.digest, ": size is 0"));
    }
  }
  // One thread per layer: opening is a few dependent small range reads, latency-bound.
  std::vector<absl::StatusOr<std::shared_ptr<const OpenLayer>>> opened(
      layers.size(), absl::UnknownError("not opened"));
  {
    std::vector<std::thread> threads;
    threads.reserve(layers.size());
    for (size_t i = 1; i < layers.size(); ++i) {
      threads.emplace_back([this, &opened, &layers, i] { opened[i] = OpenOne(layers[i]); });
    }
    opened[0] = OpenOne(layers[0]);
    for (std::thread& t : threads) t.join();
  }
  std::shared_ptr<OpenImage> image(new OpenImage());
  std::vector<std::shared_ptr<const SealedLayer>> sealed;
  for (auto& o : opened) {
    if (!o.ok()) return o.status();
    sealed.push_back((*o)->layer());
    image->layers_.push_back(std::move(*o));
  }
  absl::StatusOr<std::shared_ptr<const LayerStack>> stack = LayerStack::Create(std::move(sealed));
  if (!stack.ok()) return stack.status();
  image->stack_ = std::move(*stack);
  return std::shared_ptr<const OpenImage>(std::move(image));
}

size_t ImageOpener::OpenLayerCount() const {
  std::vector<std::shared_ptr<Slot>> slots;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [digest, slot] : slots_) slots.push_back(slot);
  }
  size_t n = 0;
  for (const auto& slot : slots) {
    absl::MutexLock lock(&slot->mu);
    n += slot->layer.expired() ? 0 : 1;
  }
  return n;
}

absl::StatusOr<StartupTrace> ImageOpener::FetchStartupTrace(const std::string& repository,
                                                            const std::string& digest,
                                                            uint64_t size) const {
  absl::StatusOr<Reference> ref = ParseReference(repository);
  if (!ref.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("startup trace ", digest, ": repository \"",
                                                   repository, "\": ", ref.status().message()));
  }
  if (size == 0 || size > kMaxStartupTraceBytes) {
    return absl::InvalidArgumentError(absl::StrCat("startup trace ", digest, ": size ", size,
                                                   " is not 1..", kMaxStartupTraceBytes));
  }
  absl::StatusOr<std::string> blob = client_->GetBlob(*ref, digest, size);
  if (!blob.ok()) {
    return absl::Status(blob.status().code(),
                        absl::StrCat("startup trace ", digest, ": ", blob.status().message()));
  }
  return ParseStartupTrace(*blob);
}

absl::StatusOr<std::string> ImageOpener::FetchStartupPack(const std::string& repository,
                                                          const StartupPackRef& pack) const {
  absl::StatusOr<Reference> ref = ParseReference(repository);
  if (!ref.ok()) return ref.status();
  if (pack.size == 0 || pack.size > kMaxStartupPackBytes) {
    return absl::InvalidArgumentError(absl::StrCat("startup pack ", pack.digest, ": size ",
                                                   pack.size, " is not 1..", kMaxStartupPackBytes));
  }
  absl::StatusOr<std::string> blob = client_->GetBlob(*ref, pack.digest, pack.size);
  if (!blob.ok()) {
    return absl::Status(blob.status().code(),
                        absl::StrCat("startup pack ", pack.digest, ": ", blob.status().message()));
  }
  if (blob->size() != pack.size) {
    return absl::InvalidArgumentError(
        absl::StrCat("startup pack ", pack.digest, ": ", blob->size(), " bytes, not ", pack.size));
  }
  return blob;
}

std::string ChainIdHex(const std::vector<LayerSpec>& layers) {
  std::string chain;
  for (const LayerSpec& l : layers) {
    chain = chain.empty() ? l.digest : Sha256Digest(absl::StrCat(chain, " ", l.digest));
  }
  size_t colon = chain.find(':');
  return colon == std::string::npos ? chain : chain.substr(colon + 1);
}

}  // namespace dadi::blockstore::blockd
