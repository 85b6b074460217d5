#include "blockstore/file/fd_io.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace dadi::blockstore {
namespace {

absl::Status ErrnoError(absl::string_view what, absl::string_view name, int err) {
  return absl::InternalError(absl::StrCat(what, " ", name, ": ", std::strerror(err)));
}

}  // namespace

absl::Status PwriteFull(int fd, const char* data, size_t n, uint64_t offset,
                        absl::string_view name) {
  while (n > 0) {
    ssize_t w = ::pwrite(fd, data, n, static_cast<off_t>(offset));
    if (w < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("pwrite", name, errno);
    }
    data += w;
    n -= static_cast<size_t>(w);
    offset += static_cast<uint64_t>(w);
  }
  return absl::OkStatus();
}

absl::Status PreadFull(int fd, char* buf, size_t n, uint64_t offset, absl::string_view name) {
  while (n > 0) {
    ssize_t r = ::pread(fd, buf, n, static_cast<off_t>(offset));
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("pread", name, errno);
    }
    if (r == 0) {
      return absl::DataLossError(absl::StrCat(name, ": unexpected end of file at offset ", offset));
    }
    buf += r;
    n -= static_cast<size_t>(r);
    offset += static_cast<uint64_t>(r);
  }
  return absl::OkStatus();
}

}  // namespace dadi::blockstore
