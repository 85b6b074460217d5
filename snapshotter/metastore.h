// Snapshot metadata in SQLite: one row per snapshot (active, view or committed) and its
// labels. Every mutation is one transaction; the database runs in WAL mode with full sync, so
// a mutation that returned OK survives kill -9 and power loss. Names and keys share one
// namespace (a committed snapshot keeps its row and id; Commit renames the key to the name).
//
// Thread-safe. The store holds its connection lock only for database work, and for the one
// callback of Create, which the caller uses to rename a staged directory into place.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "snapshotter/block_attacher.h"
#include "snapshotter/sqlite.h"
#include "snapshotter/types.h"

namespace dadi::snapshotter {

struct SnapshotRecord {
  int64_t id = 0;         // names the snapshot's directory; never reused
  int64_t parent_id = 0;  // 0: no parent
  Info info;
  Usage usage;                      // recorded at commit; zero for active snapshots and views
  std::vector<int64_t> parent_ids;  // filled by Create and GetWithParents: nearest first
  // Filled with parent_ids: whether this snapshot / each parent is a remote layer, and its
  // facts.
  std::optional<RemoteLayer> remote;
  std::vector<std::optional<RemoteLayer>> parent_remotes;

  std::string remote_top_name;  // name of the parent RemoteTopId() names

  // Id of the nearest remote parent (the top of the remote stack below), 0 if none.
  int64_t RemoteTopId() const;
};

class MetaStore {
 public:
  static absl::StatusOr<std::unique_ptr<MetaStore>> Open(const std::string& path);

  // Adds an active snapshot or a view named `key` on `parent` ("" = none). Fails with
  // NOT_FOUND if the parent is missing, INVALID_ARGUMENT if it is not committed,
  // ALREADY_EXISTS if `key` is taken. `place(id, parent_id)` runs inside the transaction
  // after the row exists; if it fails, nothing is recorded.
  absl::StatusOr<SnapshotRecord> Create(
      Kind kind, const std::string& key, const std::string& parent, const Labels& labels,
      absl::Time now, absl::FunctionRef<absl::Status(int64_t id, int64_t parent_id)> place);

  // Adds the committed snapshot `name` of a remote layer on `parent` ("" or another remote
  // layer, else FAILED_PRECONDITION), recording `layer`. Otherwise as Create.
  absl::StatusOr<SnapshotRecord> CreateRemote(
      const std::string& name, const std::string& parent, const Labels& labels,
      const RemoteLayer& layer, absl::Time now,
      absl::FunctionRef<absl::Status(int64_t id, int64_t parent_id)> place);

  // Active snapshots and views that need the remote snapshot `remote_top_id` attached.
  absl::StatusOr<int64_t> Users(int64_t remote_top_id);

  // NOT_FOUND if no snapshot has that key or name.
  absl::StatusOr<SnapshotRecord> Get(const std::string& key);
  absl::StatusOr<SnapshotRecord> GetWithParents(const std::string& key);

  // Checks what Commit checks, without changing anything; returns the active snapshot.
  absl::StatusOr<SnapshotRecord> CheckCommit(const std::string& key, const std::string& name);
  // Turns the active snapshot `key` (which must still have id `id`) into the committed
  // snapshot `name`, with `labels` replacing its labels and `usage` recorded. ALREADY_EXISTS
  // if `name` is taken, NOT_FOUND if `key` is missing, FAILED_PRECONDITION if it is not
  // active.
  absl::Status Commit(const std::string& key, const std::string& name, int64_t id,
                      const Labels& labels, const Usage& usage, absl::Time now);

  struct Removed {
    int64_t id = 0;             // the snapshot's id
    int64_t remote_top_id = 0;  // the remote snapshot it needed attached, 0 if none
    std::string remote_top_name;
    bool remote = false;  // it was a remote layer itself (the top of a stack, maybe attached)
  };
  // Deletes `key`. NOT_FOUND, or FAILED_PRECONDITION if it has children.
  absl::StatusOr<Removed> Remove(const std::string& key);

  // Applies `paths` ("labels", "labels.<key>"; none = "labels") of `info` to the snapshot
  // `info.name`. `validate` checks the resulting labels.
  absl::StatusOr<Info> Update(const Info& info, const std::vector<std::string>& paths,
                              absl::Time now,
                              absl::FunctionRef<absl::Status(const Labels&)> validate);

  absl::StatusOr<std::vector<SnapshotRecord>> List();
  absl::StatusOr<std::vector<int64_t>> Ids();

  // Deletes the snapshots `ids` and all their descendants; returns the names deleted.
  absl::StatusOr<std::vector<std::string>> DropWithDescendants(const std::vector<int64_t>& ids);

 private:
  explicit MetaStore(sqlite::Database db) : db_(std::move(db)) {}

  absl::StatusOr<SnapshotRecord> CreateRow(
      Kind kind, const std::string& key, const std::string& parent, const Labels& labels,
      const RemoteLayer* remote, absl::Time now,
      absl::FunctionRef<absl::Status(int64_t id, int64_t parent_id)> place);
  absl::StatusOr<SnapshotRecord> GetLocked(const std::string& key, bool with_labels);
  absl::StatusOr<std::optional<RemoteLayer>> RemoteLocked(int64_t id);
  absl::StatusOr<std::string> NameLocked(int64_t id);
  // Fills parent_ids, remote and parent_remotes.
  absl::Status FillChainLocked(SnapshotRecord* rec);
  absl::StatusOr<std::vector<int64_t>> ParentIdsLocked(int64_t id);
  absl::StatusOr<bool> ExistsLocked(const std::string& key);
  // What CheckCommit and Commit check: `name` is free and `key` is an active snapshot (returned).
  absl::StatusOr<SnapshotRecord> CheckCommitLocked(const std::string& key, const std::string& name);
  absl::Status WriteLabelsLocked(int64_t id, const Labels& labels);

  std::mutex mu_;  // guards db_: one connection, used by one thread at a time
  sqlite::Database db_;
};

}  // namespace dadi::snapshotter
