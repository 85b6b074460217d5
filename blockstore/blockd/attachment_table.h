// The attachments of dadi-blockd: device id → open image on a device, reference-counted.
// Attach is idempotent (same id and layers: one more reference), Detach drops one and tears the
// device down at zero. Thread-safe; attaches of different ids open their images in parallel
// (no table-wide lock is held across the slow opening), attaches of one id wait for each other.
#pragma once

#include <cstdint>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "blockstore/blockd/image_opener.h"
#include "blockstore/blockd/traced_disk.h"
#include "blockstore/device/device_backend.h"
#include "blockstore/remote/startup_trace.h"

namespace dadi::blockstore::blockd {

// A blob named by digest and size.
struct BlobRef {
  std::string digest;
  uint64_t size = 0;
};

struct AttachSpec {
  std::vector<LayerSpec> layers;  // bottom first
  std::map<std::string, std::string> options;
  std::string id;  // empty: ChainIdHex(layers)
  // A startup trace blob in the top layer's repository, prefetched on a fresh attachment.
  std::optional<BlobRef> startup_trace;
};

struct AttachmentInfo {
  std::string id;
  std::string device_path;
  std::string mount_point;
  uint64_t virtual_size = 0;
  uint64_t refcount = 0;
  std::vector<LayerSpec> layers;
};

struct AttachmentStats {
  AttachmentInfo info;
  ImageStats image;
};

// A range of a virtual disk.
using PrefetchRange = TraceRange;

struct PrefetchResult {
  uint64_t bytes_requested = 0;
  uint64_t bytes_done = 0;  // only when waited for
};

// True for a valid device id: 1..255 bytes of [A-Za-z0-9._-], not "." or "..".
bool IsValidDeviceId(absl::string_view id);

class AttachmentTable {
 public:
  // Neither is owned; both must outlive the table.
  AttachmentTable(ImageOpener* opener, DeviceBackend* backend);
  // Stops prefetches and detaches everything.
  ~AttachmentTable();
  AttachmentTable(const AttachmentTable&) = delete;
  AttachmentTable& operator=(const AttachmentTable&) = delete;

  // INVALID_ARGUMENT for a bad id, layer or option; FAILED_PRECONDITION when the id is attached
  // with other layers or options; the opener's or backend's error otherwise (nothing is left
  // behind then).
  absl::StatusOr<AttachmentInfo> Attach(const AttachSpec& spec);
  // Drops one reference (all with `force`); returns the references left. NOT_FOUND if unknown.
  absl::StatusOr<uint64_t> Detach(absl::string_view id, bool force = false);
  // Attached devices, ordered by id (attaches still opening are not listed).
  std::vector<AttachmentInfo> List() const;
  absl::StatusOr<AttachmentStats> Stat(absl::string_view id) const;
  // Reads the ranges of the virtual disk and the whole blobs of the named layers (which must
  // belong to the attachment) into the node cache: in a background thread, or now with `wait`.
  absl::StatusOr<PrefetchResult> Prefetch(absl::string_view id,
                                          const std::vector<PrefetchRange>& ranges,
                                          const std::vector<std::string>& layer_digests, bool wait);
  // Opens `layers` and prefetches the startup trace through them, in the background and
  // without a device (a pull's head start). INVALID_ARGUMENT for no layers.
  absl::Status Warm(const std::vector<LayerSpec>& layers, const BlobRef& startup_trace);
  // What the device of `id` served since it was attached, as a startup trace.
  absl::StatusOr<StartupTrace> GetTrace(absl::string_view id) const;
  // Detaches every device regardless of references (shutdown). Returns the first error.
  absl::Status DetachAll();

 private:
  struct Entry {
    // Held across the slow work of one id (opening, device setup, teardown).
    absl::Mutex mu;
    bool gone ABSL_GUARDED_BY(mu) = false;  // erased from the table
    uint64_t refcount ABSL_GUARDED_BY(mu) = 0;
    std::vector<LayerSpec> layers ABSL_GUARDED_BY(mu);
    std::map<std::string, std::string> options ABSL_GUARDED_BY(mu);
  };
  // What List and Stat read without waiting for an entry's slow work.
  struct Snapshot {
    AttachmentInfo info;
    std::shared_ptr<const OpenImage> image;
    std::shared_ptr<const TracedDisk> disk;  // what the device reads: the image, recorded
  };
  struct Job {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  absl::Status TeardownLocked(const std::string& id, Entry& entry)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(entry.mu);
  void ReapJobs(bool all);
  // Runs `fn` on a thread of its own, joined by ReapJobs.
  void StartJob(std::function<void()> fn);
  // A startup trace being fetched (on a thread of its own, so that it overlaps opening the
  // layers) and when that started.
  // A fetched trace, and its packs being fetched (in order) when it names some: the prefetch
  // fills the node cache from each as it arrives.
  struct FetchedTrace {
    StartupTrace trace;
    std::vector<std::shared_future<absl::StatusOr<std::string>>> packs;
    std::shared_future<void> fetcher;  // joined when the last copy goes
  };
  struct PendingTrace {
    BlobRef ref;
    std::shared_future<absl::StatusOr<FetchedTrace>> trace;
    absl::Time start;
    // The device's entry (none for Warm): once its attach is done, the trace's small ranges
    // are read through the device.
    std::shared_ptr<Entry> entry;
  };
  PendingTrace FetchTrace(const std::string& repository, const BlobRef& ref) const;
  static void StartFetchingPacks(ImageOpener* opener, const std::string& repository,
                                 const std::vector<StartupPackRef>& packs,
                                 const std::shared_ptr<std::atomic<bool>>& stop,
                                 FetchedTrace* fetched);
  // Prefetches the stored bytes of the trace's ranges of `image`: in a job
  // (StartTracePrefetch), or in the calling thread.
  void StartTracePrefetch(const std::string& id, std::shared_ptr<const OpenImage> image,
                          PendingTrace trace);
  void PrefetchStartupTrace(const std::string& id, const OpenImage& image,
                            const PendingTrace& pending);

  ImageOpener* const opener_;
  DeviceBackend* const backend_;
  mutable absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<Entry>, std::less<>> entries_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Snapshot, std::less<>> ready_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<std::atomic<bool>> stop_ = std::make_shared<std::atomic<bool>>(false);
  absl::Mutex jobs_mu_;
  std::vector<Job> jobs_ ABSL_GUARDED_BY(jobs_mu_);
};

}  // namespace dadi::blockstore::blockd
