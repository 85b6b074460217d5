// Plain value types of the snapshot model, shared by the store, the semantics and the gRPC
// adapter. They mirror containerd's snapshots.Info / snapshots.Usage / mount.Mount.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace dadi::snapshotter {

// Numeric values equal containerd.services.snapshots.v1.Kind (and are stored in SQLite).
enum class Kind : int {
  kUnknown = 0,
  kView = 1,
  kActive = 2,
  kCommitted = 3,
};

// "view", "active", "committed", as containerd's filters and logs spell them.
absl::string_view KindName(Kind kind);

using Labels = std::map<std::string, std::string>;

struct Info {
  std::string name;
  std::string parent;  // "" = no parent.
  Kind kind = Kind::kUnknown;
  absl::Time created = absl::UnixEpoch();
  absl::Time updated = absl::UnixEpoch();
  Labels labels;
};

struct Usage {
  int64_t size = 0;    // bytes of allocated blocks
  int64_t inodes = 0;  // distinct inodes, the directory itself included
};

// One mount, as mount(2) takes it (containerd.types.Mount).
struct Mount {
  std::string type;
  std::string source;
  std::vector<std::string> options;

  bool operator==(const Mount&) const = default;
};

}  // namespace dadi::snapshotter
