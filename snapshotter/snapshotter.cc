#include "snapshotter/snapshotter.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <set>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "snapshotter/fs_util.h"
#include "snapshotter/mounts.h"
#include "snapshotter/remote_labels.h"
#include "spdlog/spdlog.h"

namespace dadi::snapshotter {

absl::Status ValidateLabels(const Labels& labels) {
  for (const auto& [k, v] : labels) {
    if (k.size() + v.size() > kMaxLabelSize) {
      return absl::InvalidArgumentError(absl::StrCat(
          "label \"", k.substr(0, 64), k.size() > 64 ? "..." : "", "\": key and value (",
          k.size() + v.size(), " bytes) exceed the maximum of ", kMaxLabelSize, " bytes"));
    }
  }
  return absl::OkStatus();
}

namespace {

std::optional<absl::string_view> InfoField(const Info& info, const std::vector<std::string>& path) {
  if (path.empty()) return std::nullopt;
  const std::string& field = path[0];
  if (field == "kind") {
    if (info.kind == Kind::kUnknown) return std::nullopt;
    return KindName(info.kind);
  }
  if (field == "name") return absl::string_view(info.name);
  if (field == "parent") return absl::string_view(info.parent);
  if (field == "labels") {
    // As containerd's adaptor: the rest of the path, joined by ".", is the label key.
    if (info.labels.empty()) return std::nullopt;
    const std::string key = absl::StrJoin(path.begin() + 1, path.end(), ".");
    auto it = info.labels.find(key);
    if (it == info.labels.end()) return std::nullopt;
    return absl::string_view(it->second);
  }
  return std::nullopt;
}

bool IsDir(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

}  // namespace

std::string Snapshotter::SnapshotDir(int64_t id) const {
  return absl::StrCat(root_, "/snapshots/", id);
}

std::string Snapshotter::FsDir(int64_t id) const { return SnapshotDir(id) + "/fs"; }

std::string Snapshotter::AttachId(const std::string& top_name, int64_t top_id) {
  // blockd ids are 1..255 bytes of [A-Za-z0-9._-]. The top's name is the chain id of the
  // stack's blobs ("sha256:<hex>"), so every container of one image shares one device.
  std::string id = "snap-";
  for (char c : top_name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    id.push_back(ok ? c : '-');
  }
  if (id.size() > 255) id = absl::StrCat("snap-id-", top_id);
  return id;
}

absl::StatusOr<std::unique_ptr<Snapshotter>> Snapshotter::Open(
    const std::string& root_arg, std::shared_ptr<BlockAttacher> attacher,
    std::string fallback_repository) {
  std::string root = root_arg;
  while (root.size() > 1 && root.back() == '/') root.pop_back();
  if (root.empty() || root[0] != '/') {
    return absl::InvalidArgumentError(absl::StrCat("root \"", root_arg, "\" is not absolute"));
  }
  // The root holds metadata and every layer: only root may enter.
  for (const std::string& dir : {root, root + "/snapshots", root + "/staging"}) {
    if (absl::Status st = MakeDir(dir, 0700); !st.ok()) return st;
  }
  // One process per root: the lock is released by the kernel when the process dies.
  UniqueFd lock(::open((root + "/lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (lock.get() < 0) return ErrnoStatus(errno, "open " + root + "/lock");
  if (::flock(lock.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      return absl::FailedPreconditionError(
          absl::StrCat("root ", root, " is in use by another dadi-snapshotter"));
    }
    return ErrnoStatus(errno, "flock " + root + "/lock");
  }
  auto store = MetaStore::Open(root + "/metadata.db");
  if (!store.ok()) return store.status();
  std::unique_ptr<Snapshotter> s(new Snapshotter(root, *std::move(store)));
  s->lock_ = std::move(lock);
  s->attacher_ = std::move(attacher);
  s->fallback_repository_ = std::move(fallback_repository);
  if (absl::Status st = s->Reconcile(); !st.ok()) return st;
  return s;
}

absl::Status Snapshotter::RemoveUnowned(bool all_staging, std::vector<std::string>* removed) {
  // List before reading the ids: a directory appears under snapshots/ only inside the
  // transaction that records its id, so every listed directory that is owned has its id
  // visible by the time the ids are read.
  auto names = ListDir(root_ + "/snapshots");
  if (!names.ok()) return names.status();
  auto ids = store_->Ids();
  if (!ids.ok()) return ids.status();
  const std::set<int64_t> owned(ids->begin(), ids->end());
  absl::Status result;
  auto remove = [&](const std::string& path) {
    if (absl::Status st = RemoveTree(path); !st.ok()) {
      spdlog::warn("cleanup: {}", st.ToString());
      result.Update(st);
    } else if (removed != nullptr) {
      removed->push_back(path);
    }
  };
  for (const std::string& name : *names) {
    int64_t id = 0;
    if (absl::SimpleAtoi(name, &id) && absl::StrCat(id) == name && owned.count(id) != 0) continue;
    remove(absl::StrCat(root_, "/snapshots/", name));
  }
  auto staged = ListDir(root_ + "/staging");
  if (!staged.ok()) return staged.status();
  for (const std::string& name : *staged) {
    // new-* belong to Prepare/View calls in flight; only a fresh start may remove them.
    if (all_staging || name.rfind("rm-", 0) == 0) remove(absl::StrCat(root_, "/staging/", name));
  }
  return result;
}

absl::Status Snapshotter::Reconcile() {
  if (absl::Status st = RemoveUnowned(true, &report_.removed_dirs); !st.ok()) return st;
  for (const std::string& dir : report_.removed_dirs) {
    spdlog::warn("reconcile: removed {}: no snapshot owns it", dir);
  }
  auto ids = store_->Ids();
  if (!ids.ok()) return ids.status();
  std::vector<int64_t> missing;
  for (int64_t id : *ids) {
    if (!IsDir(FsDir(id))) missing.push_back(id);
  }
  if (missing.empty()) return absl::OkStatus();
  auto dropped = store_->DropWithDescendants(missing);
  if (!dropped.ok()) return dropped.status();
  for (const std::string& name : *dropped) {
    spdlog::error("reconcile: dropped snapshot \"{}\": its directory (or its parent's) is missing",
                  name);
  }
  report_.dropped_snapshots = *std::move(dropped);
  // Descendants dropped above may have left directories behind.
  return RemoveUnowned(true, &report_.removed_dirs);
}

std::shared_ptr<std::mutex> Snapshotter::AttachLock(int64_t top_id) {
  std::lock_guard lock(attach_locks_mu_);
  auto& mu = attach_locks_[top_id];
  if (!mu) mu = std::make_shared<std::mutex>();
  return mu;
}

absl::StatusOr<std::vector<Mount>> Snapshotter::MountsFor(const SnapshotRecord& rec) {
  MountSpec spec;
  spec.kind = rec.info.kind;
  spec.fs_dir = FsDir(rec.id);
  spec.work_dir = SnapshotDir(rec.id) + "/work";
  std::vector<RemoteLayer> remote;  // nearest first while collecting
  for (size_t i = 0; i < rec.parent_ids.size(); ++i) {
    if (i < rec.parent_remotes.size() && rec.parent_remotes[i].has_value()) {
      remote.push_back(*rec.parent_remotes[i]);
    } else {
      spec.parent_fs_dirs.push_back(FsDir(rec.parent_ids[i]));
    }
  }
  if (const int64_t top_id = rec.RemoteTopId(); top_id != 0) {
    if (attacher_ == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat("snapshot \"", rec.info.name,
                       "\" is on remote (overlaybd) layers, but remote layers are disabled "
                       "(blockd_address is empty)"));
    }
    std::reverse(remote.begin(), remote.end());  // blockd takes the bottom first
    std::shared_ptr<std::mutex> mu = AttachLock(top_id);
    std::lock_guard lock(*mu);
    // The top layer's startup trace, when its image carries one.
    std::optional<StartupTraceRef> trace;
    if (absl::StatusOr<SnapshotRecord> top = store_->Get(rec.remote_top_name); top.ok()) {
      trace = StartupTraceOfLabels(top->info.labels);
    }
    auto mount_point = attacher_->Attach(AttachId(rec.remote_top_name, top_id), remote, trace);
    if (!mount_point.ok()) return mount_point.status();
    // The stack is the lowest layer: the ordinary layers above it come first.
    spec.parent_fs_dirs.push_back(*mount_point);
  }
  return BuildMounts(spec);
}

Snapshotter::~Snapshotter() {
  std::lock_guard lock(ahead_mu_);
  for (AheadAttach& a : ahead_) a.thread.join();
}

void Snapshotter::AttachAhead(int64_t top_id, std::string top_name, std::vector<RemoteLayer> stack,
                              StartupTraceRef trace) {
  std::lock_guard lock(ahead_mu_);
  for (auto it = ahead_.begin(); it != ahead_.end();) {
    if (!it->done->load()) {
      ++it;
      continue;
    }
    it->thread.join();
    it = ahead_.erase(it);
  }
  auto done = std::make_shared<std::atomic<bool>>(false);
  std::thread thread([this, top_id, top_name = std::move(top_name), stack = std::move(stack),
                      trace = std::move(trace), done] {
    std::shared_ptr<std::mutex> mu = AttachLock(top_id);
    std::lock_guard attach_lock(*mu);
    const std::string id = AttachId(top_name, top_id);
    if (auto mp = attacher_->Attach(id, stack, trace); !mp.ok()) {
      // The first container attaches it then; only the head start is lost.
      spdlog::info("attaching {} ahead of its first container: {}", id, mp.status().ToString());
    } else {
      spdlog::info("attached {} ahead of its first container (startup trace {})", id, trace.digest);
    }
    done->store(true);
  });
  ahead_.push_back(AheadAttach{std::move(thread), std::move(done)});
}

void Snapshotter::ReleaseIfUnused(int64_t top_id, const std::string& top_name) {
  if (attacher_ == nullptr || top_id == 0) return;
  std::shared_ptr<std::mutex> mu = AttachLock(top_id);
  std::lock_guard lock(*mu);
  auto users = store_->Users(top_id);
  if (!users.ok()) {
    spdlog::warn("counting users of remote snapshot {}: {}", top_id, users.status().ToString());
    return;
  }
  if (*users > 0) return;
  const std::string id = AttachId(top_name, top_id);
  if (absl::Status st = attacher_->Detach(id); !st.ok()) {
    // The snapshot is gone either way; the device is left to blockd (a later attach of the
    // same stack reuses it).
    spdlog::warn("detaching {}: {}", id, st.ToString());
  } else {
    spdlog::debug("detached {}: no snapshot uses it any more", id);
  }
}

absl::StatusOr<SnapshotRecord> Snapshotter::Stage(
    bool with_work, absl::FunctionRef<absl::StatusOr<SnapshotRecord>(
                        absl::FunctionRef<absl::Status(int64_t id, int64_t parent_id)> place)>
                        record) {
  std::string staged = root_ + "/staging/new-XXXXXX";
  if (::mkdtemp(staged.data()) == nullptr) return ErrnoStatus(errno, "mkdtemp " + staged);
  int64_t placed_id = 0;
  auto cleanup = [&] {
    (void)RemoveTree(staged);
    if (placed_id != 0) (void)RemoveTree(SnapshotDir(placed_id));
  };
  // Modes as containerd's overlayfs snapshotter gives them, whatever the umask.
  absl::Status made = MakeDir(staged + "/fs", 0755);
  if (made.ok() && with_work) made = MakeDir(staged + "/work", 0711);
  if (!made.ok()) {
    cleanup();
    return made;
  }
  auto rec = record([&](int64_t id, int64_t parent_id) -> absl::Status {
    if (parent_id != 0) {
      // The upper dir takes the owner of the layer below, as containerd does for remapped
      // user namespaces.
      struct stat st;
      if (::stat(FsDir(parent_id).c_str(), &st) == 0 &&
          ::lchown((staged + "/fs").c_str(), st.st_uid, st.st_gid) != 0) {
        return ErrnoStatus(errno, "chown " + staged + "/fs");
      }
    }
    if (::rename(staged.c_str(), SnapshotDir(id).c_str()) != 0) {
      return ErrnoStatus(errno, "rename " + staged);
    }
    placed_id = id;
    // The rename must be on disk before the row that needs it is.
    return SyncDir(root_ + "/snapshots");
  });
  if (!rec.ok()) cleanup();
  return rec;
}

absl::StatusOr<std::vector<Mount>> Snapshotter::Create(Kind kind, const std::string& key,
                                                       const std::string& parent,
                                                       const Labels& labels) {
  if (key.empty()) return absl::InvalidArgumentError("snapshot key is empty");
  if (absl::Status st = ValidateLabels(labels); !st.ok()) return st;
  auto rec = Stage(kind == Kind::kActive, [&](auto place) {
    return store_->Create(kind, key, parent, labels, absl::Now(), place);
  });
  if (!rec.ok()) return rec.status();
  spdlog::debug("{} \"{}\" (id {}) on \"{}\"", kind == Kind::kActive ? "prepared" : "viewed", key,
                rec->id, parent);
  auto mounts = MountsFor(*rec);
  if (!mounts.ok()) {
    // Without its block device the snapshot is of no use: take it back, so that containerd
    // can retry with the same key.
    // Its attach failed: there is nothing of it to detach.
    if (absl::Status st = RemoveSnapshot(key, /*release=*/false); !st.ok()) {
      spdlog::warn("removing \"{}\" after a failed attach: {}", key, st.ToString());
    }
    return mounts.status();
  }
  return mounts;
}

std::optional<absl::Status> Snapshotter::PrepareRemote(const std::string& key,
                                                       const std::string& parent,
                                                       const Labels& labels) {
  auto req = ParseRemoteLayerLabels(labels);
  if (!req.ok()) {
    spdlog::warn("prepare \"{}\": {}; preparing it as an ordinary layer", key,
                 req.status().ToString());
    return std::nullopt;
  }
  if (!req->has_value()) return std::nullopt;
  RemoteLayerRequest r = **std::move(req);
  if (r.layer.repository.empty()) {
    if (fallback_repository_.empty()) {
      spdlog::info(
          "prepare \"{}\": overlaybd layer {} names no repository (labels {}, {}, {}) and no "
          "fallback_repository is configured; containerd will download it",
          key, r.layer.digest, kLabelCriImageRef, kLabelImageRef, kLabelDadiRepository);
      return std::nullopt;
    }
    r.layer.repository = fallback_repository_;
  }
  std::vector<RemoteLayer> stack;  // the remote layers below, bottom first
  if (!parent.empty()) {
    auto p = store_->GetWithParents(parent);
    if (!p.ok()) {
      if (absl::IsNotFound(p.status())) {
        return absl::NotFoundError(absl::StrCat("parent snapshot \"", parent, "\" does not exist"));
      }
      return p.status();
    }
    // Only a stack of remote layers can be one block device; a remote layer above an
    // ordinary one is unpacked like one.
    if (!p->remote.has_value()) return std::nullopt;
    for (auto it = p->parent_remotes.rbegin(); it != p->parent_remotes.rend(); ++it) {
      if (it->has_value()) stack.push_back(**it);
    }
    stack.push_back(*p->remote);
  }
  Labels committed_labels = labels;
  committed_labels[kLabelDadiRemote] = r.layer.repository;
  if (absl::Status st = ValidateLabels(committed_labels); !st.ok()) return st;
  auto rec = Stage(false, [&](auto place) {
    return store_->CreateRemote(r.target, parent, committed_labels, r.layer, absl::Now(), place);
  });
  const absl::Status exists =
      absl::AlreadyExistsError(absl::StrCat("target snapshot \"", r.target, "\": already exists"));
  if (rec.ok()) {
    spdlog::debug("committed remote layer \"{}\" (id {}, blob {} in {}) on \"{}\"", r.target,
                  rec->id, r.layer.digest, r.layer.repository, parent);
    // An image with a startup trace: its device is attached, and the trace's blocks fetched,
    // while the pull finishes and containerd creates the container.
    if (std::optional<StartupTraceRef> trace = StartupTraceOfLabels(labels); trace.has_value()) {
      stack.push_back(r.layer);
      AttachAhead(rec->id, r.target, std::move(stack), *std::move(trace));
    }
    return exists;
  }
  if (!absl::IsAlreadyExists(rec.status())) return rec.status();
  // Prepared before (another namespace, a retried pull): containerd finds it by walking for
  // a committed snapshot with this snapshot.ref and parent.
  auto existing = store_->GetWithParents(r.target);
  if (existing.ok() && existing->info.kind == Kind::kCommitted && existing->remote.has_value() &&
      existing->info.parent == parent) {
    return exists;
  }
  return std::nullopt;
}

absl::StatusOr<std::vector<Mount>> Snapshotter::Prepare(const std::string& key,
                                                        const std::string& parent,
                                                        const Labels& labels) {
  if (attacher_ != nullptr && !key.empty()) {
    if (std::optional<absl::Status> st = PrepareRemote(key, parent, labels)) return *st;
  }
  return Create(Kind::kActive, key, parent, labels);
}

absl::StatusOr<std::vector<Mount>> Snapshotter::View(const std::string& key,
                                                     const std::string& parent,
                                                     const Labels& labels) {
  return Create(Kind::kView, key, parent, labels);
}

absl::StatusOr<std::vector<Mount>> Snapshotter::Mounts(const std::string& key) {
  auto rec = store_->GetWithParents(key);
  if (!rec.ok()) return rec.status();
  if (rec->info.kind != Kind::kActive && rec->info.kind != Kind::kView) {
    return absl::FailedPreconditionError(
        absl::StrCat("snapshot \"", key, "\" is ", KindName(rec->info.kind),
                     "; only active snapshots and views have mounts"));
  }
  return MountsFor(*rec);
}

absl::Status Snapshotter::Commit(const std::string& name, const std::string& key,
                                 const Labels& labels) {
  if (name.empty()) return absl::InvalidArgumentError("committed snapshot name is empty");
  if (absl::Status st = ValidateLabels(labels); !st.ok()) return st;
  auto rec = store_->CheckCommit(key, name);
  if (!rec.ok()) return rec.status();
  // A snapshot on remote layers stops needing them attached once committed (its children
  // will attach them again when they mount).
  auto chain = store_->GetWithParents(key);
  if (!chain.ok()) return chain.status();
  // Measured once, outside the store's lock: a committed snapshot does not change.
  auto usage = DiskUsage(FsDir(rec->id));
  if (!usage.ok()) return usage.status();
  if (absl::Status st = store_->Commit(key, name, rec->id, labels, *usage, absl::Now()); !st.ok()) {
    return st;
  }
  spdlog::debug("committed \"{}\" as \"{}\" (id {})", key, name, rec->id);
  ReleaseIfUnused(chain->RemoteTopId(), chain->remote_top_name);
  return absl::OkStatus();
}

absl::Status Snapshotter::Remove(const std::string& key) { return RemoveSnapshot(key, true); }

absl::Status Snapshotter::RemoveSnapshot(const std::string& key, bool release) {
  auto removed = store_->Remove(key);
  if (!removed.ok()) return removed.status();
  // A remote layer on top of a stack may have its device attached ahead of any container
  // (AttachAhead); without users it goes with the layer.
  if (removed->remote) ReleaseIfUnused(removed->id, key);
  const int64_t* id = &removed->id;
  // Once nothing needs the block device below it, it goes. A failure to detach is logged:
  // the snapshot is gone either way.
  struct Release {
    Snapshotter* s;
    const MetaStore::Removed& r;
    bool enabled;
    ~Release() {
      if (enabled) s->ReleaseIfUnused(r.remote_top_id, r.remote_top_name);
    }
  } releaser{this, *removed, release};
  // The metadata is gone; the directory follows. Moving it to staging first makes the removal
  // atomic for anyone looking at snapshots/; what a crash leaves is swept by Open/Cleanup.
  const std::string dir = SnapshotDir(*id);
  const std::string trash = absl::StrCat(root_, "/staging/rm-", *id);
  std::string victim = trash;
  if (::rename(dir.c_str(), trash.c_str()) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    spdlog::warn("rename {} to {}: {}", dir, trash, std::strerror(errno));
    victim = dir;
  }
  if (absl::Status st = RemoveTree(victim); !st.ok()) {
    spdlog::warn("removed snapshot \"{}\" but not its directory: {}", key, st.ToString());
  }
  spdlog::debug("removed \"{}\" (id {})", key, *id);
  return absl::OkStatus();
}

absl::StatusOr<Info> Snapshotter::Stat(const std::string& key) {
  auto rec = store_->Get(key);
  if (!rec.ok()) return rec.status();
  return std::move(rec->info);
}

absl::StatusOr<Info> Snapshotter::Update(const Info& info, const std::vector<std::string>& paths) {
  if (info.name.empty()) return absl::InvalidArgumentError("snapshot name is empty");
  return store_->Update(info, paths, absl::Now(), ValidateLabels);
}

absl::Status Snapshotter::Walk(const Filter& filter,
                               absl::FunctionRef<absl::Status(const Info&)> fn) {
  auto records = store_->List();
  if (!records.ok()) return records.status();
  for (const SnapshotRecord& rec : *records) {
    const bool match = filter.Match(
        [&](const std::vector<std::string>& path) { return InfoField(rec.info, path); });
    if (!match) continue;
    if (absl::Status st = fn(rec.info); !st.ok()) return st;
  }
  return absl::OkStatus();
}

absl::StatusOr<Usage> Snapshotter::GetUsage(const std::string& key) {
  auto rec = store_->Get(key);
  if (!rec.ok()) return rec.status();
  if (rec->info.kind == Kind::kCommitted) return rec->usage;
  return DiskUsage(FsDir(rec->id));
}

absl::Status Snapshotter::Cleanup() {
  std::vector<std::string> removed;
  absl::Status st = RemoveUnowned(false, &removed);
  for (const std::string& dir : removed) spdlog::info("cleanup: removed {}", dir);
  return st;
}

}  // namespace dadi::snapshotter
