// Opens images for dadi-blockd: each layer blob of a stack is read through a RemoteBlob
// (registry client + node cache), its overlaybd envelope, ZFile and sealed LSMT layer are
// opened, and the layers are merged into a LayerStack: the virtual disk. The layers of one
// image are opened in parallel; a layer shared by several images (same blob digest) is opened
// once and shared while any of them holds it.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "blockstore/blob/layer_blob.h"
#include "blockstore/file/file.h"
#include "blockstore/lsmt/layer_stack.h"
#include "blockstore/remote/node_cache.h"
#include "blockstore/remote/registry_client.h"
#include "blockstore/remote/remote_blob.h"
#include "blockstore/remote/startup_trace.h"
#include "blockstore/zfile/block_cache.h"

namespace dadi::blockstore::blockd {

// One layer blob of an image, as named by the caller.
struct LayerSpec {
  std::string digest;      // "sha256:..."
  uint64_t size = 0;       // bytes of the blob
  std::string repository;  // host[:port]/path where the blob lives

  bool operator==(const LayerSpec&) const = default;
};

// Counters of one open layer (shared by every image holding it).
struct LayerCounters {
  uint64_t blob_reads = 0;     // reads of the blob's bytes (node cache lookups)
  uint64_t cache_hits = 0;     // ... answered without a registry fetch
  uint64_t cache_misses = 0;   // ... during which the blob fetched from the registry
  uint64_t fetched_bytes = 0;  // bytes fetched from the registry for this blob
};

// An open layer: the remote blob and the parsed layer on top of it. Thread-safe.
class OpenLayer {
 public:
  ~OpenLayer();
  const LayerSpec& spec() const { return spec_; }
  const std::shared_ptr<const SealedLayer>& layer() const { return blob_->layer(); }
  // The raw blob (through the node cache), for prefetching a whole layer.
  const RandomAccessFile& raw() const;
  // The remote blob itself: what RandomAccessFile::Locate names as the file storing the bytes.
  const RemoteBlob& remote() const { return *remote_; }
  LayerCounters Counters() const;

 private:
  friend class ImageOpener;
  class CountingBlob;
  OpenLayer() = default;
  LayerSpec spec_;
  std::shared_ptr<NodeCache> cache_;  // to unpin
  std::shared_ptr<RemoteBlob> remote_;
  std::shared_ptr<CountingBlob> counting_;
  std::unique_ptr<LayerBlob> blob_;
};

// Counters of one image.
struct ImageStats {
  uint64_t bytes_read = 0;  // bytes served from the virtual disk
  uint64_t read_errors = 0;
  uint64_t bytes_fetched = 0;  // sums over the image's layers
  uint64_t cache_hits = 0;
  uint64_t cache_misses = 0;
  uint64_t open_layers = 0;
};

// An open image: the virtual disk (a RandomAccessFile of the merged stack that counts what it
// serves) and the layers it holds open.
class OpenImage final : public RandomAccessFile {
 public:
  uint64_t Size() const override { return stack_->Size(); }
  absl::StatusOr<size_t> Pread(uint64_t offset, size_t n, char* buf) const override;
  std::string Name() const override { return stack_->Name(); }
  void Locate(uint64_t offset, uint64_t n, std::vector<FileExtent>* out) const override {
    stack_->Locate(offset, n, out);
  }

  const std::vector<std::shared_ptr<const OpenLayer>>& layers() const { return layers_; }
  // The stack itself (reads through it are not counted as served bytes: prefetch uses it).
  const LayerStack& stack() const { return *stack_; }
  ImageStats Stats() const;

 private:
  friend class ImageOpener;
  OpenImage() = default;
  std::vector<std::shared_ptr<const OpenLayer>> layers_;
  std::shared_ptr<const LayerStack> stack_;
  mutable std::atomic<uint64_t> bytes_read_{0};
  mutable std::atomic<uint64_t> read_errors_{0};
};

struct ImageOpenerOptions {
  RemoteBlobOptions remote;
  // Decompressed ZFile blocks of every layer share one cache of this size.
  size_t block_cache_bytes = 64 << 20;
};

// Thread-safe.
class ImageOpener {
 public:
  ImageOpener(std::shared_ptr<const RegistryClient> client, std::shared_ptr<NodeCache> cache,
              ImageOpenerOptions options);

  // Opens the stack (bottom first, 1..256 layers). INVALID_ARGUMENT for a bad digest or
  // repository; the blob's error (DATA_LOSS, UNAVAILABLE, NOT_FOUND ...) naming the layer.
  absl::StatusOr<std::shared_ptr<const OpenImage>> Open(const std::vector<LayerSpec>& layers);

  // Layers currently open (held by some image).
  size_t OpenLayerCount() const;

  // The startup trace blob `digest` (`size` bytes, at most kMaxStartupTraceBytes) from
  // `repository`, verified against its digest and parsed.
  absl::StatusOr<StartupTrace> FetchStartupTrace(const std::string& repository,
                                                 const std::string& digest, uint64_t size) const;
  // The trace's pack blob (at most kMaxStartupPackBytes) from `repository`, verified against its
  // digest.
  absl::StatusOr<std::string> FetchStartupPack(const std::string& repository,
                                               const StartupPackRef& pack) const;

 private:
  // One slot per digest; its mutex is held while the layer opens, so that concurrent opens of
  // one layer wait for the first and share it, while different layers open in parallel.
  struct Slot {
    absl::Mutex mu;
    std::weak_ptr<const OpenLayer> layer ABSL_GUARDED_BY(mu);
  };
  absl::StatusOr<std::shared_ptr<const OpenLayer>> OpenOne(const LayerSpec& spec);
  absl::StatusOr<std::shared_ptr<const OpenLayer>> OpenUncached(const LayerSpec& spec);

  std::shared_ptr<const RegistryClient> client_;
  std::shared_ptr<NodeCache> cache_;
  ImageOpenerOptions options_;
  std::shared_ptr<BlockCache> block_cache_;
  mutable absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<Slot>> slots_ ABSL_GUARDED_BY(mu_);
};

// The default device id of a stack: hex of the OCI chain id of its digests.
std::string ChainIdHex(const std::vector<LayerSpec>& layers);

}  // namespace dadi::blockstore::blockd
