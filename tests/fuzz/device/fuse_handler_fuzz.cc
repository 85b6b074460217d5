// libFuzzer target for the FUSE request decoder (blockstore/device/fuse_handler.h): the bytes
// the kernel hands us through /dev/fuse, fed to FuseHandler::Handle with in-memory disks and a
// sink that checks every reply instead of /dev/fuse.
//
// Input: byte 0 picks a fresh connection (INIT expected first) or a resumed one; then records
// of a 2-byte little-endian length and that many bytes, each one request (its header's length
// may disagree with the record's, as a lying kernel's would).
#include <linux/fuse.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "blockstore/device/fuse_handler.h"
#include "blockstore/file/file.h"

namespace {

using dadi::blockstore::FuseConnParams;
using dadi::blockstore::FuseFileTable;
using dadi::blockstore::FuseHandler;
using dadi::blockstore::FuseReplySink;

class FailingFile final : public dadi::blockstore::RandomAccessFile {
 public:
  uint64_t Size() const override { return 1 << 20; }
  absl::StatusOr<size_t> Pread(uint64_t, size_t, char*) const override {
    return absl::UnavailableError("fuzz");
  }
  std::string Name() const override { return "failing"; }
};

// Every reply must be well formed: a header whose length is what is written, an error that is
// 0 or a negative errno (and then no payload), a payload no larger than we may send.
class CheckingSink final : public FuseReplySink {
 public:
  explicit CheckingSink(size_t max_payload) : max_payload_(max_payload) {}
  void Send(const struct iovec* iov, int iovcnt) override {
    if (iovcnt < 1 || iov[0].iov_len != sizeof(fuse_out_header)) std::abort();
    size_t total = 0;
    for (int i = 0; i < iovcnt; ++i) total += iov[i].iov_len;
    fuse_out_header h;
    std::memcpy(&h, iov[0].iov_base, sizeof(h));
    if (h.len != total) std::abort();
    if (h.error > 0 || h.error < -4095) std::abort();
    if (h.error != 0 && total != sizeof(h)) std::abort();
    if (total - sizeof(h) > max_payload_) std::abort();
    // Touch every payload byte so ASan sees reads of uninitialised or freed memory.
    volatile unsigned char sink = 0;
    for (int i = 1; i < iovcnt; ++i) {
      const auto* p = static_cast<const unsigned char*>(iov[i].iov_base);
      for (size_t j = 0; j < iov[i].iov_len; ++j) sink = sink ^ p[j];
    }
  }

 private:
  size_t max_payload_;
};

std::shared_ptr<FuseFileTable> MakeTable() {
  auto table = std::make_shared<FuseFileTable>();
  std::string data(3 * 4096 + 17, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 31);
  (void)table->Add("disk", dadi::blockstore::NewMemoryFile(data));  // inode 2
  (void)table->Add("failing", std::make_shared<FailingFile>());     // inode 3
  (void)table->Add("empty", dadi::blockstore::NewMemoryFile(""));   // inode 4
  return table;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::shared_ptr<FuseFileTable> table = MakeTable();
  if (size < 1) return 0;
  // The same bytes as a recorded table state (blockd's restart file): must decode or fail
  // cleanly, and what decodes must encode back to the same bytes.
  {
    absl::string_view bytes(reinterpret_cast<const char*>(data), size);
    absl::StatusOr<dadi::blockstore::FuseTableState> state =
        dadi::blockstore::FuseTableState::Decode(bytes);
    if (state.ok() && state->Encode() != bytes) std::abort();
    absl::StatusOr<FuseConnParams> decoded = FuseConnParams::Decode(bytes);
    if (decoded.ok() && decoded->Encode() != bytes) std::abort();
  }
  FuseConnParams params;
  params.major = 7;
  params.minor = FUSE_KERNEL_MINOR_VERSION;
  params.max_readahead = 128 * 1024;
  params.max_write = 1 << 20;
  params.max_pages = 256;
  params.page_size = 4096;
  params.flags = FUSE_ASYNC_READ | FUSE_MAX_PAGES;
  std::unique_ptr<FuseHandler> handler =
      (data[0] & 1)
          ? std::make_unique<FuseHandler>(table, dadi::blockstore::FuseHandlerOptions{}, params)
          : std::make_unique<FuseHandler>(table, dadi::blockstore::FuseHandlerOptions{});
  CheckingSink sink(params.MaxRead());
  std::vector<char> scratch;
  size_t pos = 1;
  while (pos + 2 <= size) {
    size_t len = static_cast<size_t>(data[pos]) | (static_cast<size_t>(data[pos + 1]) << 8);
    pos += 2;
    len = std::min(len, size - pos);
    // A copy of exactly `len` bytes, so ASan catches any read past the request.
    std::vector<char> request(data + pos, data + pos + len);
    handler->Handle(request.data(), request.size(), &scratch, &sink);
    pos += len;
  }
  return 0;
}
