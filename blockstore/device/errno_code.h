// The status code of an errno from mount(2), the loop driver and /dev: the cases a caller acts
// on (nothing there, not allowed, busy for now) get codes of their own, the rest is INTERNAL.
#pragma once

#include <cerrno>

#include "absl/status/status.h"

namespace dadi::blockstore {

inline absl::StatusCode DeviceErrnoCode(int err) {
  switch (err) {
    case ENOENT:
    case ENXIO:
      return absl::StatusCode::kNotFound;
    case EPERM:
    case EACCES:
      return absl::StatusCode::kPermissionDenied;
    case EBUSY:
      return absl::StatusCode::kUnavailable;
    default:
      return absl::StatusCode::kInternal;
  }
}

}  // namespace dadi::blockstore
