// Whole-buffer pread/pwrite on a raw file descriptor, for the files libblockstore keeps open
// itself (writable layers, the node cache): short transfers and EINTR are retried.
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace dadi::blockstore {

// Writes all n bytes at `offset`. `name` names the file in error messages.
absl::Status PwriteFull(int fd, const char* data, size_t n, uint64_t offset,
                        absl::string_view name);

// Reads exactly n bytes at `offset`; end of file before that is DATA_LOSS (the caller knows
// the bytes must be there).
absl::Status PreadFull(int fd, char* buf, size_t n, uint64_t offset, absl::string_view name);

}  // namespace dadi::blockstore
