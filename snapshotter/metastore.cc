#include "snapshotter/metastore.h"

#include <algorithm>
#include <map>
#include <set>
#include <utility>

#include "absl/functional/function_ref.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace dadi::snapshotter {
namespace {

// PRAGMA user_version, set by kSchema. 2 added remote_layers and attachments; a version 1
// database is upgraded in place (the new tables start empty).
constexpr int64_t kSchemaVersion = 2;

constexpr char kSchema[] = R"sql(
CREATE TABLE IF NOT EXISTS snapshots (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  name TEXT NOT NULL UNIQUE,
  parent_id INTEGER REFERENCES snapshots(id),
  kind INTEGER NOT NULL,
  created_ns INTEGER NOT NULL,
  updated_ns INTEGER NOT NULL,
  size INTEGER NOT NULL DEFAULT 0,
  inodes INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots(parent_id);
CREATE TABLE IF NOT EXISTS labels (
  snapshot_id INTEGER NOT NULL REFERENCES snapshots(id) ON DELETE CASCADE,
  key TEXT NOT NULL,
  value TEXT NOT NULL,
  PRIMARY KEY (snapshot_id, key)
) WITHOUT ROWID;
-- Committed snapshots that are overlaybd layers served by dadi-blockd (their fs dir is empty).
CREATE TABLE IF NOT EXISTS remote_layers (
  snapshot_id INTEGER PRIMARY KEY REFERENCES snapshots(id) ON DELETE CASCADE,
  digest TEXT NOT NULL,
  size INTEGER NOT NULL,
  repository TEXT NOT NULL
);
-- Active snapshots and views on a chain with remote layers: which remote snapshot (the top
-- of the remote stack) they need attached.
CREATE TABLE IF NOT EXISTS attachments (
  snapshot_id INTEGER PRIMARY KEY REFERENCES snapshots(id) ON DELETE CASCADE,
  remote_top_id INTEGER NOT NULL REFERENCES snapshots(id)
);
CREATE INDEX IF NOT EXISTS attachments_top ON attachments(remote_top_id);
PRAGMA user_version = 2;
)sql";

constexpr char kSelect[] =
    "SELECT s.id, s.name, COALESCE(p.name, ''), s.kind, s.created_ns, s.updated_ns, s.size, "
    "s.inodes, COALESCE(s.parent_id, 0) FROM snapshots s LEFT JOIN snapshots p "
    "ON p.id = s.parent_id";

SnapshotRecord ReadRecord(const sqlite::Statement& st) {
  SnapshotRecord r;
  r.id = st.ColumnInt(0);
  r.info.name = st.ColumnText(1);
  r.info.parent = st.ColumnText(2);
  r.info.kind = static_cast<Kind>(st.ColumnInt(3));
  r.info.created = absl::FromUnixNanos(st.ColumnInt(4));
  r.info.updated = absl::FromUnixNanos(st.ColumnInt(5));
  r.usage.size = st.ColumnInt(6);
  r.usage.inodes = st.ColumnInt(7);
  r.parent_id = st.ColumnInt(8);
  return r;
}

absl::Status NotFound(const std::string& key) {
  return absl::NotFoundError(absl::StrCat("snapshot \"", key, "\" does not exist"));
}

// Steps `st` through all its rows, calling `on_row` at each (it reads the columns).
absl::Status ForEachRow(sqlite::Statement& st, absl::FunctionRef<void()> on_row) {
  while (true) {
    absl::StatusOr<bool> row = st.Step();
    if (!row.ok()) return row.status();
    if (!*row) return absl::OkStatus();
    on_row();
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetaStore>> MetaStore::Open(const std::string& path) {
  auto db = sqlite::Database::Open(path);
  if (!db.ok()) return db.status();
  // WAL: readers never block the writer; synchronous=FULL: a committed transaction is on disk
  // before COMMIT returns. busy_timeout: another process holding the file (which the lock
  // file in the root prevents) would make us wait rather than fail at once.
  for (const char* pragma : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL",
                             "PRAGMA foreign_keys=ON", "PRAGMA busy_timeout=5000"}) {
    if (absl::Status st = db->Exec(pragma); !st.ok()) return st;
  }
  {
    // A database written by a newer dadi-snapshotter may mean things this one cannot read.
    auto version = db->Prepare("PRAGMA user_version");
    if (!version.ok()) return version.status();
    auto row = version->Step();
    if (!row.ok()) return row.status();
    if (*row && version->ColumnInt(0) > kSchemaVersion) {
      return absl::FailedPreconditionError(
          absl::StrCat(path, " has schema version ", version->ColumnInt(0),
                       "; this dadi-snapshotter reads up to ", kSchemaVersion));
    }
  }  // the statement is finalized before the schema changes
  if (absl::Status st = db->Exec(kSchema); !st.ok()) return st;
  return std::unique_ptr<MetaStore>(new MetaStore(*std::move(db)));
}

absl::StatusOr<bool> MetaStore::ExistsLocked(const std::string& key) {
  auto st = db_.Prepare("SELECT 1 FROM snapshots WHERE name = ?");
  if (!st.ok()) return st.status();
  st->Bind(1, key);
  return st->Step();
}

absl::StatusOr<std::vector<int64_t>> MetaStore::ParentIdsLocked(int64_t id) {
  auto st = db_.Prepare(
      "WITH RECURSIVE chain(id, parent_id, depth) AS ("
      " SELECT id, parent_id, 0 FROM snapshots WHERE id = ?"
      " UNION ALL SELECT s.id, s.parent_id, c.depth + 1 FROM snapshots s"
      " JOIN chain c ON s.id = c.parent_id)"
      " SELECT id FROM chain WHERE depth > 0 ORDER BY depth");
  if (!st.ok()) return st.status();
  st->Bind(1, id);
  std::vector<int64_t> ids;
  absl::Status read = ForEachRow(*st, [&] { ids.push_back(st->ColumnInt(0)); });
  if (!read.ok()) return read;
  return ids;
}

absl::StatusOr<SnapshotRecord> MetaStore::GetLocked(const std::string& key, bool with_labels) {
  auto st = db_.Prepare(absl::StrCat(kSelect, " WHERE s.name = ?"));
  if (!st.ok()) return st.status();
  st->Bind(1, key);
  auto row = st->Step();
  if (!row.ok()) return row.status();
  if (!*row) return NotFound(key);
  SnapshotRecord r = ReadRecord(*st);
  if (with_labels) {
    auto ls = db_.Prepare("SELECT key, value FROM labels WHERE snapshot_id = ?");
    if (!ls.ok()) return ls.status();
    ls->Bind(1, r.id);
    absl::Status read =
        ForEachRow(*ls, [&] { r.info.labels.emplace(ls->ColumnText(0), ls->ColumnText(1)); });
    if (!read.ok()) return read;
  }
  return r;
}

absl::Status MetaStore::WriteLabelsLocked(int64_t id, const Labels& labels) {
  auto del = db_.Prepare("DELETE FROM labels WHERE snapshot_id = ?");
  if (!del.ok()) return del.status();
  if (absl::Status s = del->Bind(1, id).Run(); !s.ok()) return s;
  if (labels.empty()) return absl::OkStatus();
  auto ins = db_.Prepare("INSERT INTO labels (snapshot_id, key, value) VALUES (?, ?, ?)");
  if (!ins.ok()) return ins.status();
  for (const auto& [k, v] : labels) {
    ins->Reset();
    if (absl::Status s = ins->Bind(1, id).Bind(2, k).Bind(3, v).Run(); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<RemoteLayer>> MetaStore::RemoteLocked(int64_t id) {
  auto st = db_.Prepare("SELECT digest, size, repository FROM remote_layers WHERE snapshot_id = ?");
  if (!st.ok()) return st.status();
  st->Bind(1, id);
  auto row = st->Step();
  if (!row.ok()) return row.status();
  if (!*row) return std::optional<RemoteLayer>();
  RemoteLayer l;
  l.digest = st->ColumnText(0);
  l.size = static_cast<uint64_t>(st->ColumnInt(1));
  l.repository = st->ColumnText(2);
  return std::optional<RemoteLayer>(std::move(l));
}

absl::StatusOr<std::string> MetaStore::NameLocked(int64_t id) {
  auto st = db_.Prepare("SELECT name FROM snapshots WHERE id = ?");
  if (!st.ok()) return st.status();
  st->Bind(1, id);
  auto row = st->Step();
  if (!row.ok()) return row.status();
  if (!*row) return absl::NotFoundError(absl::StrCat("snapshot id ", id, " does not exist"));
  return st->ColumnText(0);
}

absl::Status MetaStore::FillChainLocked(SnapshotRecord* rec) {
  rec->parent_ids.clear();
  rec->parent_remotes.clear();
  if (rec->parent_id != 0) {
    auto chain = ParentIdsLocked(rec->id);
    if (!chain.ok()) return chain.status();
    rec->parent_ids = *std::move(chain);
  }
  auto own = RemoteLocked(rec->id);
  if (!own.ok()) return own.status();
  rec->remote = *std::move(own);
  for (int64_t pid : rec->parent_ids) {
    auto r = RemoteLocked(pid);
    if (!r.ok()) return r.status();
    rec->parent_remotes.push_back(*std::move(r));
  }
  rec->remote_top_name.clear();
  if (const int64_t top = rec->RemoteTopId(); top != 0) {
    auto name = NameLocked(top);
    if (!name.ok()) return name.status();
    rec->remote_top_name = *std::move(name);
  }
  return absl::OkStatus();
}

int64_t SnapshotRecord::RemoteTopId() const {
  for (size_t i = 0; i < parent_ids.size() && i < parent_remotes.size(); ++i) {
    if (parent_remotes[i].has_value()) return parent_ids[i];
  }
  return 0;
}

absl::StatusOr<SnapshotRecord> MetaStore::Create(
    Kind kind, const std::string& key, const std::string& parent, const Labels& labels,
    absl::Time now, absl::FunctionRef<absl::Status(int64_t id, int64_t parent_id)> place) {
  if (kind != Kind::kActive && kind != Kind::kView) {
    return absl::InvalidArgumentError("only active snapshots and views can be created");
  }
  return CreateRow(kind, key, parent, labels, nullptr, now, place);
}

absl::StatusOr<SnapshotRecord> MetaStore::CreateRemote(
    const std::string& name, const std::string& parent, const Labels& labels,
    const RemoteLayer& layer, absl::Time now,
    absl::FunctionRef<absl::Status(int64_t id, int64_t parent_id)> place) {
  return CreateRow(Kind::kCommitted, name, parent, labels, &layer, now, place);
}

absl::StatusOr<SnapshotRecord> MetaStore::CreateRow(
    Kind kind, const std::string& key, const std::string& parent, const Labels& labels,
    const RemoteLayer* remote, absl::Time now,
    absl::FunctionRef<absl::Status(int64_t id, int64_t parent_id)> place) {
  std::lock_guard lock(mu_);
  auto txn = sqlite::Transaction::Begin(&db_);
  if (!txn.ok()) return txn.status();

  SnapshotRecord rec;
  if (!parent.empty()) {
    auto p = GetLocked(parent, false);
    if (!p.ok()) {
      if (absl::IsNotFound(p.status())) {
        return absl::NotFoundError(absl::StrCat("parent snapshot \"", parent, "\" does not exist"));
      }
      return p.status();
    }
    if (p->info.kind != Kind::kCommitted) {
      return absl::InvalidArgumentError(
          absl::StrCat("parent \"", parent, "\" is not a committed snapshot"));
    }
    if (remote != nullptr) {
      // A block device holds the whole file system: remote layers stack on remote layers only.
      auto pr = RemoteLocked(p->id);
      if (!pr.ok()) return pr.status();
      if (!pr->has_value()) {
        return absl::FailedPreconditionError(absl::StrCat(
            "parent \"", parent, "\" is not a remote layer; a remote layer cannot go on it"));
      }
    }
    rec.parent_id = p->id;
  }
  auto exists = ExistsLocked(key);
  if (!exists.ok()) return exists.status();
  if (*exists) {
    return absl::AlreadyExistsError(absl::StrCat("snapshot \"", key, "\" already exists"));
  }

  const int64_t ns = absl::ToUnixNanos(now);
  auto ins = db_.Prepare(
      "INSERT INTO snapshots (name, parent_id, kind, created_ns, updated_ns) "
      "VALUES (?, ?, ?, ?, ?)");
  if (!ins.ok()) return ins.status();
  ins->Bind(1, key);
  if (rec.parent_id != 0) {
    ins->Bind(2, rec.parent_id);
  } else {
    ins->BindNull(2);
  }
  ins->Bind(3, static_cast<int64_t>(kind)).Bind(4, ns).Bind(5, ns);
  if (absl::Status s = ins->Run(); !s.ok()) return s;
  rec.id = db_.LastInsertRowId();
  if (absl::Status s = WriteLabelsLocked(rec.id, labels); !s.ok()) return s;
  if (remote != nullptr) {
    auto rl = db_.Prepare(
        "INSERT INTO remote_layers (snapshot_id, digest, size, repository) VALUES (?, ?, ?, ?)");
    if (!rl.ok()) return rl.status();
    rl->Bind(1, rec.id)
        .Bind(2, remote->digest)
        .Bind(3, static_cast<int64_t>(remote->size))
        .Bind(4, remote->repository);
    if (absl::Status s = rl->Run(); !s.ok()) return s;
  }
  if (absl::Status s = FillChainLocked(&rec); !s.ok()) return s;
  if (const int64_t top = rec.RemoteTopId(); top != 0 && kind != Kind::kCommitted) {
    auto at = db_.Prepare("INSERT INTO attachments (snapshot_id, remote_top_id) VALUES (?, ?)");
    if (!at.ok()) return at.status();
    if (absl::Status s = at->Bind(1, rec.id).Bind(2, top).Run(); !s.ok()) return s;
  }
  if (absl::Status s = place(rec.id, rec.parent_id); !s.ok()) return s;
  if (absl::Status s = txn->Commit(); !s.ok()) return s;

  rec.info.name = key;
  rec.info.parent = parent;
  rec.info.kind = kind;
  rec.info.created = rec.info.updated = absl::FromUnixNanos(ns);
  rec.info.labels = labels;
  return rec;
}

absl::StatusOr<int64_t> MetaStore::Users(int64_t remote_top_id) {
  std::lock_guard lock(mu_);
  auto st = db_.Prepare("SELECT COUNT(*) FROM attachments WHERE remote_top_id = ?");
  if (!st.ok()) return st.status();
  st->Bind(1, remote_top_id);
  auto row = st->Step();
  if (!row.ok()) return row.status();
  return *row ? st->ColumnInt(0) : 0;
}

absl::StatusOr<SnapshotRecord> MetaStore::Get(const std::string& key) {
  std::lock_guard lock(mu_);
  return GetLocked(key, true);
}

absl::StatusOr<SnapshotRecord> MetaStore::GetWithParents(const std::string& key) {
  std::lock_guard lock(mu_);
  auto rec = GetLocked(key, false);
  if (!rec.ok()) return rec.status();
  if (absl::Status s = FillChainLocked(&*rec); !s.ok()) return s;
  return rec;
}

absl::StatusOr<SnapshotRecord> MetaStore::CheckCommit(const std::string& key,
                                                      const std::string& name) {
  std::lock_guard lock(mu_);
  return CheckCommitLocked(key, name);
}

absl::StatusOr<SnapshotRecord> MetaStore::CheckCommitLocked(const std::string& key,
                                                            const std::string& name) {
  auto exists = ExistsLocked(name);
  if (!exists.ok()) return exists.status();
  if (*exists) {
    return absl::AlreadyExistsError(absl::StrCat("snapshot \"", name, "\" already exists"));
  }
  auto rec = GetLocked(key, false);
  if (!rec.ok()) return rec.status();
  if (rec->info.kind != Kind::kActive) {
    return absl::FailedPreconditionError(
        absl::StrCat("snapshot \"", key, "\" is ", KindName(rec->info.kind), ", not active"));
  }
  return rec;
}

absl::Status MetaStore::Commit(const std::string& key, const std::string& name, int64_t id,
                               const Labels& labels, const Usage& usage, absl::Time now) {
  std::lock_guard lock(mu_);
  auto txn = sqlite::Transaction::Begin(&db_);
  if (!txn.ok()) return txn.status();
  auto rec = CheckCommitLocked(key, name);
  if (!rec.ok()) return rec.status();
  if (rec->id != id) {
    return absl::AbortedError(
        absl::StrCat("snapshot \"", key, "\" was replaced while being committed"));
  }
  const int64_t ns = absl::ToUnixNanos(now);
  auto up = db_.Prepare(
      "UPDATE snapshots SET name = ?, kind = ?, created_ns = ?, updated_ns = ?, size = ?, "
      "inodes = ? WHERE id = ?");
  if (!up.ok()) return up.status();
  up->Bind(1, name)
      .Bind(2, static_cast<int64_t>(Kind::kCommitted))
      .Bind(3, ns)
      .Bind(4, ns)
      .Bind(5, usage.size)
      .Bind(6, usage.inodes)
      .Bind(7, id);
  if (absl::Status s = up->Run(); !s.ok()) return s;
  if (absl::Status s = WriteLabelsLocked(id, labels); !s.ok()) return s;
  // A committed snapshot is no user of a block device (its children are).
  auto at = db_.Prepare("DELETE FROM attachments WHERE snapshot_id = ?");
  if (!at.ok()) return at.status();
  if (absl::Status s = at->Bind(1, id).Run(); !s.ok()) return s;
  return txn->Commit();
}

absl::StatusOr<MetaStore::Removed> MetaStore::Remove(const std::string& key) {
  std::lock_guard lock(mu_);
  auto txn = sqlite::Transaction::Begin(&db_);
  if (!txn.ok()) return txn.status();
  auto rec = GetLocked(key, false);
  if (!rec.ok()) return rec.status();
  auto child = db_.Prepare("SELECT name FROM snapshots WHERE parent_id = ? LIMIT 1");
  if (!child.ok()) return child.status();
  child->Bind(1, rec->id);
  auto has_child = child->Step();
  if (!has_child.ok()) return has_child.status();
  if (*has_child) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot remove snapshot \"", key, "\": it has a child, \"", child->ColumnText(0), "\""));
  }
  Removed removed;
  removed.id = rec->id;
  auto remote = db_.Prepare("SELECT 1 FROM remote_layers WHERE snapshot_id = ?");
  if (!remote.ok()) return remote.status();
  remote->Bind(1, rec->id);
  auto is_remote = remote->Step();
  if (!is_remote.ok()) return is_remote.status();
  removed.remote = *is_remote;
  auto top = db_.Prepare("SELECT remote_top_id FROM attachments WHERE snapshot_id = ?");
  if (!top.ok()) return top.status();
  top->Bind(1, rec->id);
  auto has_top = top->Step();
  if (!has_top.ok()) return has_top.status();
  if (*has_top) {
    removed.remote_top_id = top->ColumnInt(0);
    auto name = NameLocked(removed.remote_top_id);
    if (!name.ok()) return name.status();
    removed.remote_top_name = *std::move(name);
  }
  auto del = db_.Prepare("DELETE FROM snapshots WHERE id = ?");
  if (!del.ok()) return del.status();
  if (absl::Status s = del->Bind(1, rec->id).Run(); !s.ok()) return s;
  if (absl::Status s = txn->Commit(); !s.ok()) return s;
  return removed;
}

absl::StatusOr<Info> MetaStore::Update(const Info& info, const std::vector<std::string>& paths,
                                       absl::Time now,
                                       absl::FunctionRef<absl::Status(const Labels&)> validate) {
  std::lock_guard lock(mu_);
  auto txn = sqlite::Transaction::Begin(&db_);
  if (!txn.ok()) return txn.status();
  auto rec = GetLocked(info.name, true);
  if (!rec.ok()) return rec.status();
  Labels labels = rec->info.labels;
  if (paths.empty()) {
    labels = info.labels;
  }
  for (const std::string& path : paths) {
    if (path == "labels") {
      labels = info.labels;
    } else if (absl::StartsWith(path, "labels.")) {
      const std::string key = path.substr(7);
      auto it = info.labels.find(key);
      if (it == info.labels.end() || it->second.empty()) {
        labels.erase(key);  // as containerd: setting a label to "" deletes it
      } else {
        labels[key] = it->second;
      }
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot update field \"", path, "\" of snapshot \"", info.name, "\""));
    }
  }
  // Empty values mean "no label" in containerd; do not store them.
  for (auto it = labels.begin(); it != labels.end();) {
    it = it->second.empty() ? labels.erase(it) : std::next(it);
  }
  if (absl::Status s = validate(labels); !s.ok()) return s;

  const int64_t ns = std::max(absl::ToUnixNanos(now), absl::ToUnixNanos(rec->info.updated) + 1);
  auto up = db_.Prepare("UPDATE snapshots SET updated_ns = ? WHERE id = ?");
  if (!up.ok()) return up.status();
  if (absl::Status s = up->Bind(1, ns).Bind(2, rec->id).Run(); !s.ok()) return s;
  if (absl::Status s = WriteLabelsLocked(rec->id, labels); !s.ok()) return s;
  if (absl::Status s = txn->Commit(); !s.ok()) return s;
  rec->info.labels = std::move(labels);
  rec->info.updated = absl::FromUnixNanos(ns);
  return rec->info;
}

absl::StatusOr<std::vector<SnapshotRecord>> MetaStore::List() {
  std::lock_guard lock(mu_);
  // One read transaction, so that snapshots and labels agree.
  if (absl::Status s = db_.Exec("BEGIN"); !s.ok()) return s;
  struct EndRead {
    sqlite::Database* db;
    ~EndRead() { (void)db->Exec("COMMIT"); }
  } end_read{&db_};

  auto st = db_.Prepare(absl::StrCat(kSelect, " ORDER BY s.id"));
  if (!st.ok()) return st.status();
  std::vector<SnapshotRecord> out;
  std::map<int64_t, size_t> index;
  absl::Status read = ForEachRow(*st, [&] {
    index[st->ColumnInt(0)] = out.size();
    out.push_back(ReadRecord(*st));
  });
  if (!read.ok()) return read;
  auto ls = db_.Prepare("SELECT snapshot_id, key, value FROM labels");
  if (!ls.ok()) return ls.status();
  read = ForEachRow(*ls, [&] {
    auto it = index.find(ls->ColumnInt(0));
    if (it != index.end()) {
      out[it->second].info.labels.emplace(ls->ColumnText(1), ls->ColumnText(2));
    }
  });
  if (!read.ok()) return read;
  return out;
}

absl::StatusOr<std::vector<int64_t>> MetaStore::Ids() {
  std::lock_guard lock(mu_);
  auto st = db_.Prepare("SELECT id FROM snapshots ORDER BY id");
  if (!st.ok()) return st.status();
  std::vector<int64_t> ids;
  absl::Status read = ForEachRow(*st, [&] { ids.push_back(st->ColumnInt(0)); });
  if (!read.ok()) return read;
  return ids;
}

absl::StatusOr<std::vector<std::string>> MetaStore::DropWithDescendants(
    const std::vector<int64_t>& ids) {
  std::lock_guard lock(mu_);
  auto txn = sqlite::Transaction::Begin(&db_);
  if (!txn.ok()) return txn.status();
  std::vector<std::string> dropped;
  auto sel = db_.Prepare(
      "WITH RECURSIVE tree(id, depth) AS (SELECT id, 0 FROM snapshots WHERE id = ?"
      " UNION ALL SELECT s.id, t.depth + 1 FROM snapshots s JOIN tree t ON s.parent_id = t.id)"
      " SELECT tree.id, snapshots.name FROM tree JOIN snapshots USING (id)"
      " ORDER BY tree.depth DESC");
  if (!sel.ok()) return sel.status();
  auto del = db_.Prepare("DELETE FROM snapshots WHERE id = ?");
  if (!del.ok()) return del.status();
  for (int64_t root : ids) {
    sel->Reset();
    sel->Bind(1, root);
    std::vector<std::pair<int64_t, std::string>> victims;  // deepest first
    absl::Status read =
        ForEachRow(*sel, [&] { victims.emplace_back(sel->ColumnInt(0), sel->ColumnText(1)); });
    if (!read.ok()) return read;
    for (auto& [id, name] : victims) {
      del->Reset();
      if (absl::Status s = del->Bind(1, id).Run(); !s.ok()) return s;
      dropped.push_back(std::move(name));
    }
  }
  if (absl::Status s = txn->Commit(); !s.ok()) return s;
  return dropped;
}

}  // namespace dadi::snapshotter
