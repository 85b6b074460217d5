// The snapshot semantics of containerd's snapshots API over a MetaStore and a directory tree:
//
//   <root>/metadata.db         SQLite metadata (MetaStore)
//   <root>/snapshots/<id>/fs   a snapshot's files (overlay upper dir, or the layer itself)
//   <root>/snapshots/<id>/work overlay work dir of an active snapshot
//   <root>/staging/            directories being created (new-*) or removed (rm-*)
//
// Crash safety: a snapshot directory is built in staging and renamed into snapshots/ inside
// the metadata transaction that records it, so after a crash a directory under snapshots/
// either has its row or is a leftover that Open() removes; Remove deletes the row first, then
// the directory. Open() reconciles: stray directories are removed, rows without directories
// are reported and dropped.
//
// Remote (overlaybd) layers, when a BlockAttacher is given: a Prepare whose labels describe an
// overlaybd layer (remote_labels.h) records a committed snapshot under the label
// containerd.io/snapshot.ref with an empty directory and answers ALREADY_EXISTS, so containerd
// fetches nothing. Active snapshots and views on a chain with remote layers get the stack
// attached (one attachment per remote stack, shared by all its users): the mount point becomes
// the lowest lowerdir, ordinary layers above it further lowerdirs. Mounts re-attaches what a
// blockd restart or a reboot lost; removing or committing the last user detaches.
//
// Thread-safe; file-system work (creating, measuring, removing trees) runs outside the store's
// lock, so many calls proceed at once.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "snapshotter/block_attacher.h"
#include "snapshotter/filter.h"
#include "snapshotter/fs_util.h"
#include "snapshotter/metastore.h"
#include "snapshotter/types.h"

namespace dadi::snapshotter {

// containerd's limit on one label: key and value together.
inline constexpr size_t kMaxLabelSize = 4096;

// INVALID_ARGUMENT naming the label if a key+value exceeds kMaxLabelSize.
absl::Status ValidateLabels(const Labels& labels);

class Snapshotter {
 public:
  struct ReconcileReport {
    std::vector<std::string> removed_dirs;       // directories no snapshot owned
    std::vector<std::string> dropped_snapshots;  // snapshots whose directory was missing
  };

  // Creates the root layout if needed, opens the metadata and reconciles. Without an
  // `attacher`, remote layers are disabled: overlaybd layers are prepared like any other
  // (containerd downloads and unpacks them).
  // `fallback_repository` ("host[:port]/path") serves overlaybd layers whose labels name no
  // repository; empty: containerd downloads those.
  static absl::StatusOr<std::unique_ptr<Snapshotter>> Open(
      const std::string& root, std::shared_ptr<BlockAttacher> attacher = nullptr,
      std::string fallback_repository = "");

  // Waits for attaches a pull began in the background.
  ~Snapshotter();

  // The blockd device id of the remote stack whose top is the committed snapshot `top_name`.
  static std::string AttachId(const std::string& top_name, int64_t top_id);

  absl::StatusOr<std::vector<Mount>> Prepare(const std::string& key, const std::string& parent,
                                             const Labels& labels);
  absl::StatusOr<std::vector<Mount>> View(const std::string& key, const std::string& parent,
                                          const Labels& labels);
  // Mounts of an active snapshot or a view; FAILED_PRECONDITION for a committed one.
  absl::StatusOr<std::vector<Mount>> Mounts(const std::string& key);
  absl::Status Commit(const std::string& name, const std::string& key, const Labels& labels);
  absl::Status Remove(const std::string& key);
  absl::StatusOr<Info> Stat(const std::string& key);
  absl::StatusOr<Info> Update(const Info& info, const std::vector<std::string>& paths);
  // Calls `fn` for each snapshot matching `filter`, in id order; stops at its first error.
  absl::Status Walk(const Filter& filter, absl::FunctionRef<absl::Status(const Info&)> fn);
  absl::StatusOr<Usage> GetUsage(const std::string& key);
  // Removes directories that no snapshot owns.
  absl::Status Cleanup();

  const ReconcileReport& reconcile_report() const { return report_; }
  const std::string& root() const { return root_; }
  std::string FsDir(int64_t id) const;

 private:
  Snapshotter(std::string root, std::unique_ptr<MetaStore> store)
      : root_(std::move(root)), store_(std::move(store)) {}

  absl::StatusOr<std::vector<Mount>> Create(Kind kind, const std::string& key,
                                            const std::string& parent, const Labels& labels);
  absl::Status Reconcile();
  absl::StatusOr<std::vector<Mount>> MountsFor(const SnapshotRecord& rec);
  // Builds the directories of a new snapshot in staging and has `record` record it, renaming
  // them into place through the callback it gets.
  absl::StatusOr<SnapshotRecord> Stage(
      bool with_work, absl::FunctionRef<absl::StatusOr<SnapshotRecord>(
                          absl::FunctionRef<absl::Status(int64_t id, int64_t parent_id)> place)>
                          record);
  // The remote-layer path of Prepare: nullopt when the layer is to be prepared as an ordinary
  // one after all, else the answer (ALREADY_EXISTS on success).
  std::optional<absl::Status> PrepareRemote(const std::string& key, const std::string& parent,
                                            const Labels& labels);
  // Remove; with `release`, also detaches the stack below if this was its last user.
  absl::Status RemoveSnapshot(const std::string& key, bool release);
  // Attaches the remote stack `stack` (top: snapshot `top_name`, `top_id`) in the background,
  // with its startup trace: a pull of a traced image has its device ready, and the trace's
  // blocks coming in, before containerd creates the first container.
  void AttachAhead(int64_t top_id, std::string top_name, std::vector<RemoteLayer> stack,
                   StartupTraceRef trace);
  // Detaches the remote stack `top_id` if no active snapshot or view needs it any more.
  void ReleaseIfUnused(int64_t top_id, const std::string& top_name);
  std::shared_ptr<std::mutex> AttachLock(int64_t top_id);
  std::string SnapshotDir(int64_t id) const;
  // Removes snapshots/<entry> not owned by any id in the store; with `staging` also the
  // directories left in staging by removals (all of staging when nothing else runs).
  absl::Status RemoveUnowned(bool all_staging, std::vector<std::string>* removed);

  std::string root_;
  std::unique_ptr<MetaStore> store_;
  UniqueFd lock_;                            // flock on <root>/lock, held while open
  std::shared_ptr<BlockAttacher> attacher_;  // null: remote layers disabled
  std::string fallback_repository_;
  // Serializes attaching and detaching of one remote stack (by its top's id), so that a
  // check of its users and the detach that follows cannot interleave with an attach.
  std::mutex attach_locks_mu_;
  std::map<int64_t, std::shared_ptr<std::mutex>> attach_locks_;
  ReconcileReport report_;
  // Attaches begun by pulls of traced images (AttachAhead): finished ones are joined by the
  // next AttachAhead, the rest by the destructor.
  struct AheadAttach {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::mutex ahead_mu_;
  std::vector<AheadAttach> ahead_;
};

}  // namespace dadi::snapshotter
