#include "snapshotter/mounts.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace dadi::snapshotter {

std::vector<Mount> BuildMounts(const MountSpec& spec) {
  if (spec.parent_fs_dirs.empty()) {
    // overlayfs needs a lower layer; with none, the snapshot is its own directory.
    return {Mount{"bind", spec.fs_dir, {spec.kind == Kind::kView ? "ro" : "rw", "rbind"}}};
  }
  if (spec.kind != Kind::kActive && spec.parent_fs_dirs.size() == 1) {
    // A view of one layer is that layer, read-only; overlay would need two lower dirs.
    return {Mount{"bind", spec.parent_fs_dirs.front(), {"ro", "rbind"}}};
  }
  std::vector<std::string> options;
  if (spec.kind == Kind::kActive) {
    options.push_back(absl::StrCat("workdir=", spec.work_dir));
    options.push_back(absl::StrCat("upperdir=", spec.fs_dir));
  }
  options.push_back(absl::StrCat("lowerdir=", absl::StrJoin(spec.parent_fs_dirs, ":")));
  return {Mount{"overlay", "overlay", std::move(options)}};
}

}  // namespace dadi::snapshotter
