#include "snapshotter/types.h"

namespace dadi::snapshotter {

absl::string_view KindName(Kind kind) {
  switch (kind) {
    case Kind::kView:
      return "view";
    case Kind::kActive:
      return "active";
    case Kind::kCommitted:
      return "committed";
    case Kind::kUnknown:
      break;
  }
  return "unknown";
}

}  // namespace dadi::snapshotter
