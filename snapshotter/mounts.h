// Mounts for a snapshot, built as containerd's overlayfs snapshotter builds them:
//   no parent:              bind of the snapshot's own fs dir, "rw" (active) or "ro" (view)
//   view with one parent:   read-only bind of the parent's fs dir
//   otherwise:              overlay; lowerdir = parents' fs dirs nearest first, and for an
//                           active snapshot upperdir/workdir = its own dirs (a view has none,
//                           so the overlay is read-only)
// Snapshot directories are <root>/snapshots/<id>/fs with short numeric ids, so that a client
// mounting a long chain can shorten lowerdir to relative paths below <root>/snapshots (as
// containerd's mount helper does when the options exceed a page).
#pragma once

#include <string>
#include <vector>

#include "snapshotter/types.h"

namespace dadi::snapshotter {

struct MountSpec {
  Kind kind = Kind::kUnknown;
  std::string fs_dir;                       // the snapshot's own upper directory
  std::string work_dir;                     // overlay work directory (active snapshots)
  std::vector<std::string> parent_fs_dirs;  // nearest parent first
};

std::vector<Mount> BuildMounts(const MountSpec& spec);

}  // namespace dadi::snapshotter
