// The FUSE protocol, as far as dadi-blockd needs it: decoding one request read from /dev/fuse
// and producing its reply. No system calls live here (the server in fuse_server.h owns the fd,
// the mount and the threads), so the decoder can be fuzzed with raw bytes and a fake sink.
//
// The file system is a flat, read-only root directory with one regular file per attached disk.
// All state that the kernel can refer to after a restart of blockd is either negotiated once
// (FuseConnParams) or in the file table (name -> inode number, size): file handles are the inode
// numbers themselves and lookups are not counted, so a new process that has both can answer
// every request of a connection it did not initialise.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "blockstore/file/file.h"

namespace dadi::blockstore {

// The parameters fixed by FUSE_INIT. A process resuming a connection (restart) is given these
// instead of a second INIT, which the kernel never sends.
struct FuseConnParams {
  // The max_write we offer in INIT (large: the request buffer is sized from it).
  static constexpr uint32_t kOfferedMaxWrite = 1 << 20;

  uint32_t major = 0;          // protocol version agreed (always 7)
  uint32_t minor = 0;          // min(kernel's, ours)
  uint32_t max_readahead = 0;  // bytes
  uint32_t max_write = 0;      // bytes; sizes the request buffer
  uint32_t max_pages = 0;      // pages per request when FUSE_MAX_PAGES was granted
  uint32_t page_size = 0;      // of the machine that negotiated
  uint64_t flags = 0;          // granted INIT flags (flags2 in the high half)

  // Largest READ the kernel sends on this connection, in bytes.
  uint32_t MaxRead() const;
  // Size of the buffer one read(2) of /dev/fuse needs (the kernel refuses smaller ones).
  size_t RequestBufferSize() const;

  // Fixed-length little-endian encoding: magic "DADIFUSE", format version, the fields above.
  static constexpr size_t kEncodedLength = 8 + 4 + 6 * 4 + 8;
  std::string Encode() const;
  static absl::StatusOr<FuseConnParams> Decode(absl::string_view bytes);
};

// One file of the root directory as the kernel knows it.
struct FuseFileInfo {
  std::string name;
  uint64_t ino = 0;
  uint64_t size = 0;
};

// What a resuming process needs of a file table besides the disks: every file the kernel may
// know and the next inode number (never hand out one the kernel may still hold).
struct FuseTableState {
  uint64_t next_ino = 0;
  std::vector<FuseFileInfo> files;

  // Little-endian: magic "DADITABL", version, next_ino, count, then per file ino, size, name
  // length (u32) and name.
  std::string Encode() const;
  // Checks every length against the input and every name and inode number for validity.
  static absl::StatusOr<FuseTableState> Decode(absl::string_view bytes);
};

// The files of the root directory. Thread-safe. Inode numbers are never reused within a
// connection (they are the file handles too), so a stale kernel reference can only miss.
class FuseFileTable {
 public:
  // Inode numbers of files start here (FUSE_ROOT_ID is 1).
  static constexpr uint64_t kFirstFileIno = 2;

  FuseFileTable() = default;
  FuseFileTable(const FuseFileTable&) = delete;
  FuseFileTable& operator=(const FuseFileTable&) = delete;

  // Adds `name` (a valid file name, see ValidateName) backed by `disk`; returns its inode.
  // ALREADY_EXISTS if the name is taken.
  absl::StatusOr<uint64_t> Add(absl::string_view name, std::shared_ptr<RandomAccessFile> disk);
  // Re-adds a file with the inode number it had before a restart. The disk must have the
  // recorded size; inode numbers issued later stay above it.
  absl::Status Restore(const FuseFileInfo& info, std::shared_ptr<RandomAccessFile> disk);
  // NOT_FOUND if absent. Requests already holding the disk finish; later ones miss.
  absl::Status Remove(absl::string_view name);

  std::optional<FuseFileInfo> Lookup(absl::string_view name) const;
  // The file with inode `ino`, or nullptr.
  std::shared_ptr<RandomAccessFile> Disk(uint64_t ino, FuseFileInfo* info) const;
  // Files with inode > after_ino, in inode order, at most `limit`.
  std::vector<FuseFileInfo> ListAfter(uint64_t after_ino, size_t limit) const;
  // Every file, in inode order.
  std::vector<FuseFileInfo> Snapshot() const;
  // Snapshot() and next_ino() taken together.
  FuseTableState State() const;
  uint64_t next_ino() const;
  // Ensures inode numbers issued from now on are >= `ino` (used when resuming).
  void AdvanceNextIno(uint64_t ino);
  uint64_t TotalSize() const;
  size_t size() const;

  // Names are 1..255 bytes of [A-Za-z0-9._-], not "." or "..": they become file and directory
  // names. INVALID_ARGUMENT otherwise.
  static absl::Status ValidateName(absl::string_view name);

 private:
  struct Node {
    std::string name;
    uint64_t size = 0;
    std::shared_ptr<RandomAccessFile> disk;
  };
  mutable absl::Mutex mu_;
  std::map<uint64_t, Node> by_ino_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, uint64_t, std::less<>> by_name_ ABSL_GUARDED_BY(mu_);
  uint64_t next_ino_ ABSL_GUARDED_BY(mu_) = kFirstFileIno;
};

// Where replies go: /dev/fuse in the server (one writev per reply), a recorder in tests.
class FuseReplySink {
 public:
  virtual ~FuseReplySink() = default;
  // One complete reply: a fuse_out_header followed by its payload, as an iovec array.
  virtual void Send(const struct iovec* iov, int iovcnt) = 0;
};

struct FuseHandlerOptions {
  // Largest request payload we accept from the kernel and the read size we offer.
  uint32_t max_pages = 256;
  uint16_t max_background = 64;
  uint16_t congestion_threshold = 48;
  // Timestamps of every node (the file system never changes them).
  int64_t mtime_sec = 0;
  // How long the kernel may cache names and attributes. Names are not cached (files come and
  // go with attach/detach and a lookup is cheap); attributes only change with a resize.
  absl::Duration entry_timeout = absl::ZeroDuration();
  absl::Duration attr_timeout = absl::Seconds(1);
};

// Decodes requests and produces replies. Thread-safe: several threads call Handle at once.
class FuseHandler {
 public:
  // A fresh connection: the first request must be FUSE_INIT.
  FuseHandler(std::shared_ptr<FuseFileTable> table, FuseHandlerOptions options);
  // A resumed connection: INIT happened in an earlier process.
  FuseHandler(std::shared_ptr<FuseFileTable> table, FuseHandlerOptions options,
              const FuseConnParams& params);

  // Handles one request of `len` bytes (exactly what one read(2) of /dev/fuse returned).
  // `scratch` is the caller's buffer for read data; it is grown as needed to MaxRead().
  // Malformed requests are answered with -EINVAL (or -EIO) when they carry a usable header,
  // and dropped otherwise.
  void Handle(const char* request, size_t len, std::vector<char>* scratch, FuseReplySink* sink);

  // The negotiated parameters, once INIT was answered.
  std::optional<FuseConnParams> params() const;
  // Blocks until INIT was answered or `timeout` passed; returns whether it was.
  bool WaitInitialized(absl::Duration timeout) const;
  // Whether the kernel sent FUSE_DESTROY.
  bool destroyed() const;

  // Request counters, for metrics and tests.
  uint64_t reads() const;
  uint64_t read_errors() const;

 private:
  struct Request;
  void HandleInit(const Request& req, FuseReplySink* sink);
  void HandleLookup(const Request& req, FuseReplySink* sink);
  void HandleGetattr(const Request& req, FuseReplySink* sink);
  void HandleOpen(const Request& req, FuseReplySink* sink, bool dir);
  void HandleRead(const Request& req, std::vector<char>* scratch, FuseReplySink* sink);
  void HandleReaddir(const Request& req, std::vector<char>* scratch, FuseReplySink* sink);
  void HandleStatfs(const Request& req, FuseReplySink* sink);
  void HandleAccess(const Request& req, FuseReplySink* sink);
  void FillAttr(uint64_t ino, uint64_t size, void* attr) const;

  const std::shared_ptr<FuseFileTable> table_;
  const FuseHandlerOptions options_;
  mutable absl::Mutex mu_;
  std::optional<FuseConnParams> params_ ABSL_GUARDED_BY(mu_);
  bool destroyed_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<uint64_t> reads_{0};
  std::atomic<uint64_t> read_errors_{0};
};

}  // namespace dadi::blockstore
