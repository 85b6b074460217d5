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
// Thread-safe; file-system work (creating, measuring, removing trees) runs outside the store's
// lock, so many calls proceed at once.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
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

  // Creates the root layout if needed, opens the metadata and reconciles.
  static absl::StatusOr<std::unique_ptr<Snapshotter>> Open(const std::string& root);

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
  std::vector<Mount> MountsFor(const SnapshotRecord& rec) const;
  std::string SnapshotDir(int64_t id) const;
  // Removes snapshots/<entry> not owned by any id in the store; with `staging` also the
  // directories left in staging by removals (all of staging when nothing else runs).
  absl::Status RemoveUnowned(bool all_staging, std::vector<std::string>* removed);

  std::string root_;
  std::unique_ptr<MetaStore> store_;
  UniqueFd lock_;  // flock on <root>/lock, held while open
  ReconcileReport report_;
};

}  // namespace dadi::snapshotter
