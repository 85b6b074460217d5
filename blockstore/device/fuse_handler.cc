#include "blockstore/device/fuse_handler.h"

#include <fcntl.h>
#include <linux/fuse.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "blockstore/file/coding.h"
#include "spdlog/spdlog.h"

namespace dadi::blockstore {
namespace {

constexpr char kParamsMagic[8] = {'D', 'A', 'D', 'I', 'F', 'U', 'S', 'E'};
constexpr uint32_t kParamsVersion = 1;

// The protocol version we speak (the headers on the build machine).
constexpr uint32_t kOurMinor = FUSE_KERNEL_MINOR_VERSION;
// Oldest kernel protocol we serve: 7.23 (Linux 3.15) has every reply at its full size.
constexpr uint32_t kOldestMinor = 23;

// INIT flags we ask for. Parallel reads (ASYNC_READ) and large requests (MAX_PAGES) are what
// make a loop device on top of FUSE fast; no writeback cache (the file system is read-only).
constexpr uint64_t kWantedFlags =
    FUSE_ASYNC_READ | FUSE_BIG_WRITES | FUSE_MAX_PAGES | FUSE_PARALLEL_DIROPS;

}  // namespace

// --- FuseConnParams ---------------------------------------------------------------------------

uint32_t FuseConnParams::MaxRead() const {
  uint32_t pages = (flags & FUSE_MAX_PAGES) ? std::max<uint32_t>(max_pages, 1) : 32;
  return pages * std::max<uint32_t>(page_size, 4096);
}

size_t FuseConnParams::RequestBufferSize() const {
  size_t need = sizeof(fuse_in_header) + sizeof(fuse_write_in) + max_write;
  // Room for a PATH_MAX name or an xattr value in requests we only refuse.
  need = std::max<size_t>(need, sizeof(fuse_in_header) + 64 * 1024 + 4096);
  return std::max<size_t>(need, FUSE_MIN_READ_BUFFER);
}

std::string FuseConnParams::Encode() const {
  std::string out(kEncodedLength, '\0');
  char* p = out.data();
  std::memcpy(p, kParamsMagic, 8);
  EncodeFixed32(p + 8, kParamsVersion);
  EncodeFixed32(p + 12, major);
  EncodeFixed32(p + 16, minor);
  EncodeFixed32(p + 20, max_readahead);
  EncodeFixed32(p + 24, max_write);
  EncodeFixed32(p + 28, max_pages);
  EncodeFixed32(p + 32, page_size);
  EncodeFixed64(p + 36, flags);
  return out;
}

absl::StatusOr<FuseConnParams> FuseConnParams::Decode(absl::string_view bytes) {
  if (bytes.size() != kEncodedLength) {
    return absl::InvalidArgumentError(absl::StrCat("FUSE connection parameters: length ",
                                                   bytes.size(), ", want ", kEncodedLength));
  }
  const char* p = bytes.data();
  if (std::memcmp(p, kParamsMagic, 8) != 0) {
    return absl::InvalidArgumentError("FUSE connection parameters: bad magic");
  }
  if (DecodeFixed32(p + 8) != kParamsVersion) {
    return absl::InvalidArgumentError(
        absl::StrCat("FUSE connection parameters: unknown version ", DecodeFixed32(p + 8)));
  }
  FuseConnParams params;
  params.major = DecodeFixed32(p + 12);
  params.minor = DecodeFixed32(p + 16);
  params.max_readahead = DecodeFixed32(p + 20);
  params.max_write = DecodeFixed32(p + 24);
  params.max_pages = DecodeFixed32(p + 28);
  params.page_size = DecodeFixed32(p + 32);
  params.flags = DecodeFixed64(p + 36);
  if (params.major != FUSE_KERNEL_VERSION || params.minor < kOldestMinor ||
      params.minor > kOurMinor) {
    return absl::InvalidArgumentError(
        absl::StrCat("FUSE connection parameters: protocol ", params.major, ".", params.minor));
  }
  if (params.max_write == 0 || params.max_write > (64u << 20) || params.max_pages > 65535 ||
      params.page_size < 4096 || params.page_size > (1u << 20) ||
      (params.page_size & (params.page_size - 1)) != 0) {
    return absl::InvalidArgumentError("FUSE connection parameters: sizes out of range");
  }
  return params;
}

// --- FuseTableState ---------------------------------------------------------------------------

namespace {
constexpr char kTableMagic[8] = {'D', 'A', 'D', 'I', 'T', 'A', 'B', 'L'};
constexpr uint32_t kTableVersion = 1;
constexpr size_t kTableHeaderLength = 8 + 4 + 8 + 4;
constexpr size_t kTableEntryFixedLength = 8 + 8 + 4;
}  // namespace

std::string FuseTableState::Encode() const {
  std::string out(kTableHeaderLength, '\0');
  std::memcpy(out.data(), kTableMagic, 8);
  EncodeFixed32(out.data() + 8, kTableVersion);
  EncodeFixed64(out.data() + 12, next_ino);
  EncodeFixed32(out.data() + 20, static_cast<uint32_t>(files.size()));
  for (const FuseFileInfo& f : files) {
    char fixed[kTableEntryFixedLength];
    EncodeFixed64(fixed, f.ino);
    EncodeFixed64(fixed + 8, f.size);
    EncodeFixed32(fixed + 16, static_cast<uint32_t>(f.name.size()));
    out.append(fixed, sizeof(fixed));
    out.append(f.name);
  }
  return out;
}

absl::StatusOr<FuseTableState> FuseTableState::Decode(absl::string_view bytes) {
  if (bytes.size() < kTableHeaderLength || std::memcmp(bytes.data(), kTableMagic, 8) != 0) {
    return absl::InvalidArgumentError("FUSE table state: bad magic or truncated header");
  }
  if (DecodeFixed32(bytes.data() + 8) != kTableVersion) {
    return absl::InvalidArgumentError(
        absl::StrCat("FUSE table state: unknown version ", DecodeFixed32(bytes.data() + 8)));
  }
  FuseTableState state;
  state.next_ino = DecodeFixed64(bytes.data() + 12);
  const uint32_t count = DecodeFixed32(bytes.data() + 20);
  bytes.remove_prefix(kTableHeaderLength);
  // Each entry takes at least its fixed part: a count that cannot fit is damage, not a reason
  // to reserve memory.
  if (count > bytes.size() / kTableEntryFixedLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("FUSE table state: ", count, " files do not fit in ", bytes.size(), " bytes"));
  }
  state.files.reserve(count);
  uint64_t last_ino = 0;
  for (uint32_t i = 0; i < count; ++i) {
    if (bytes.size() < kTableEntryFixedLength) {
      return absl::InvalidArgumentError(absl::StrCat("FUSE table state: file ", i, " truncated"));
    }
    FuseFileInfo f;
    f.ino = DecodeFixed64(bytes.data());
    f.size = DecodeFixed64(bytes.data() + 8);
    const uint32_t name_len = DecodeFixed32(bytes.data() + 16);
    bytes.remove_prefix(kTableEntryFixedLength);
    if (name_len > bytes.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("FUSE table state: file ", i, ": name length ", name_len, " past the end"));
    }
    f.name = std::string(bytes.substr(0, name_len));
    bytes.remove_prefix(name_len);
    if (absl::Status s = FuseFileTable::ValidateName(f.name); !s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("FUSE table state: file ", i, ": ", s.message()));
    }
    if (f.ino < FuseFileTable::kFirstFileIno || f.ino <= last_ino || f.ino >= state.next_ino) {
      return absl::InvalidArgumentError(
          absl::StrCat("FUSE table state: file ", i, ": inode ", f.ino, " out of order or range"));
    }
    last_ino = f.ino;
    state.files.push_back(std::move(f));
  }
  if (!bytes.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("FUSE table state: ", bytes.size(), " trailing bytes"));
  }
  return state;
}

// --- FuseFileTable ----------------------------------------------------------------------------

absl::Status FuseFileTable::ValidateName(absl::string_view name) {
  if (name.empty() || name.size() > 255 || name == "." || name == "..") {
    return absl::InvalidArgumentError(
        absl::StrCat("device id \"", name, "\": must be 1..255 characters, not . or .."));
  }
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat("device id \"", name, "\": only [A-Za-z0-9._-] are allowed"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> FuseFileTable::Add(absl::string_view name,
                                            std::shared_ptr<RandomAccessFile> disk) {
  if (absl::Status s = ValidateName(name); !s.ok()) return s;
  if (disk == nullptr) return absl::InvalidArgumentError("FuseFileTable::Add: null disk");
  absl::MutexLock lock(&mu_);
  if (by_name_.find(name) != by_name_.end()) {
    return absl::AlreadyExistsError(absl::StrCat("FUSE file ", name, " already exists"));
  }
  uint64_t ino = next_ino_++;
  uint64_t size = disk->Size();
  by_name_.emplace(std::string(name), ino);
  by_ino_.emplace(ino, Node{std::string(name), size, std::move(disk)});
  return ino;
}

absl::Status FuseFileTable::Restore(const FuseFileInfo& info,
                                    std::shared_ptr<RandomAccessFile> disk) {
  if (absl::Status s = ValidateName(info.name); !s.ok()) return s;
  if (disk == nullptr) return absl::InvalidArgumentError("FuseFileTable::Restore: null disk");
  if (info.ino < kFirstFileIno) {
    return absl::InvalidArgumentError(
        absl::StrCat("FUSE file ", info.name, ": inode ", info.ino, " is reserved"));
  }
  if (disk->Size() != info.size) {
    return absl::FailedPreconditionError(absl::StrCat("FUSE file ", info.name, ": disk ",
                                                      disk->Name(), " has size ", disk->Size(),
                                                      ", the kernel knows ", info.size));
  }
  absl::MutexLock lock(&mu_);
  if (by_name_.count(info.name) != 0 || by_ino_.count(info.ino) != 0) {
    return absl::AlreadyExistsError(
        absl::StrCat("FUSE file ", info.name, " (inode ", info.ino, ") already exists"));
  }
  by_name_.emplace(info.name, info.ino);
  by_ino_.emplace(info.ino, Node{info.name, info.size, std::move(disk)});
  next_ino_ = std::max(next_ino_, info.ino + 1);
  return absl::OkStatus();
}

absl::Status FuseFileTable::Remove(absl::string_view name) {
  absl::MutexLock lock(&mu_);
  auto it = by_name_.find(name);
  if (it == by_name_.end()) {
    return absl::NotFoundError(absl::StrCat("FUSE file ", name, " does not exist"));
  }
  by_ino_.erase(it->second);
  by_name_.erase(it);
  return absl::OkStatus();
}

std::optional<FuseFileInfo> FuseFileTable::Lookup(absl::string_view name) const {
  absl::MutexLock lock(&mu_);
  auto it = by_name_.find(name);
  if (it == by_name_.end()) return std::nullopt;
  const Node& node = by_ino_.at(it->second);
  return FuseFileInfo{node.name, it->second, node.size};
}

std::shared_ptr<RandomAccessFile> FuseFileTable::Disk(uint64_t ino, FuseFileInfo* info) const {
  absl::MutexLock lock(&mu_);
  auto it = by_ino_.find(ino);
  if (it == by_ino_.end()) return nullptr;
  if (info != nullptr) *info = FuseFileInfo{it->second.name, ino, it->second.size};
  return it->second.disk;
}

std::vector<FuseFileInfo> FuseFileTable::ListAfter(uint64_t after_ino, size_t limit) const {
  std::vector<FuseFileInfo> out;
  absl::MutexLock lock(&mu_);
  for (auto it = by_ino_.upper_bound(after_ino); it != by_ino_.end() && out.size() < limit; ++it) {
    out.push_back(FuseFileInfo{it->second.name, it->first, it->second.size});
  }
  return out;
}

std::vector<FuseFileInfo> FuseFileTable::Snapshot() const {
  return ListAfter(0, static_cast<size_t>(-1));
}

FuseTableState FuseFileTable::State() const {
  absl::MutexLock lock(&mu_);
  FuseTableState state;
  state.next_ino = next_ino_;
  for (const auto& [ino, node] : by_ino_) state.files.push_back({node.name, ino, node.size});
  return state;
}

uint64_t FuseFileTable::next_ino() const {
  absl::MutexLock lock(&mu_);
  return next_ino_;
}

void FuseFileTable::AdvanceNextIno(uint64_t ino) {
  absl::MutexLock lock(&mu_);
  next_ino_ = std::max(next_ino_, ino);
}

uint64_t FuseFileTable::TotalSize() const {
  absl::MutexLock lock(&mu_);
  uint64_t total = 0;
  for (const auto& [ino, node] : by_ino_) total += node.size;
  return total;
}

size_t FuseFileTable::size() const {
  absl::MutexLock lock(&mu_);
  return by_ino_.size();
}

// --- FuseHandler ------------------------------------------------------------------------------

// A request after its header was checked: the header and the payload that follows it.
struct FuseHandler::Request {
  fuse_in_header header;
  const char* body;
  size_t body_len;

  // Copies the fixed-size argument at the start of the payload, zero-filling what an older
  // kernel did not send (`min_len` bytes are required). False if the payload is shorter.
  template <typename T>
  bool Arg(T* out, size_t min_len = sizeof(T)) const {
    if (body_len < min_len) return false;
    std::memset(out, 0, sizeof(T));
    std::memcpy(out, body, std::min(body_len, sizeof(T)));
    return true;
  }
};

namespace {

void SendReply(FuseReplySink* sink, uint64_t unique, int error, const void* payload, size_t len) {
  fuse_out_header out{};
  out.unique = unique;
  out.error = error;
  out.len = static_cast<uint32_t>(sizeof(out) + (error == 0 ? len : 0));
  struct iovec iov[2];
  iov[0].iov_base = &out;
  iov[0].iov_len = sizeof(out);
  int n = 1;
  if (error == 0 && len > 0) {
    iov[1].iov_base = const_cast<void*>(payload);
    iov[1].iov_len = len;
    n = 2;
  }
  sink->Send(iov, n);
}

void SendError(FuseReplySink* sink, uint64_t unique, int err) {
  SendReply(sink, unique, -err, nullptr, 0);
}

template <typename T>
void SendStruct(FuseReplySink* sink, uint64_t unique, const T& value) {
  SendReply(sink, unique, 0, &value, sizeof(value));
}

void SplitDuration(absl::Duration d, uint64_t* sec, uint32_t* nsec) {
  if (d < absl::ZeroDuration()) d = absl::ZeroDuration();
  int64_t s = absl::IDivDuration(d, absl::Seconds(1), &d);
  *sec = static_cast<uint64_t>(s);
  *nsec = static_cast<uint32_t>(absl::ToInt64Nanoseconds(d));
}

}  // namespace

FuseHandler::FuseHandler(std::shared_ptr<FuseFileTable> table, FuseHandlerOptions options)
    : table_(std::move(table)), options_(options) {}

FuseHandler::FuseHandler(std::shared_ptr<FuseFileTable> table, FuseHandlerOptions options,
                         const FuseConnParams& params)
    : table_(std::move(table)), options_(options) {
  absl::MutexLock lock(&mu_);
  params_ = params;
}

std::optional<FuseConnParams> FuseHandler::params() const {
  absl::MutexLock lock(&mu_);
  return params_;
}

bool FuseHandler::WaitInitialized(absl::Duration timeout) const {
  absl::MutexLock lock(&mu_);
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return params_.has_value(); };
  return mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
}

bool FuseHandler::destroyed() const {
  absl::MutexLock lock(&mu_);
  return destroyed_;
}

uint64_t FuseHandler::reads() const { return reads_.load(std::memory_order_relaxed); }
uint64_t FuseHandler::read_errors() const { return read_errors_.load(std::memory_order_relaxed); }

void FuseHandler::Handle(const char* request, size_t len, std::vector<char>* scratch,
                         FuseReplySink* sink) {
  Request req;
  // Without a whole header there is no `unique` to answer; the kernel never sends such a thing.
  if (request == nullptr || len < sizeof(fuse_in_header)) return;
  std::memcpy(&req.header, request, sizeof(req.header));
  const fuse_in_header& h = req.header;
  // The length the header claims must be what was read; extensions (never negotiated by us)
  // must fit inside it.
  size_t ext_len = static_cast<size_t>(h.total_extlen) * 8;
  if (h.len != len || ext_len > len - sizeof(fuse_in_header)) {
    if (h.opcode != FUSE_FORGET && h.opcode != FUSE_BATCH_FORGET && h.opcode != FUSE_INTERRUPT) {
      SendError(sink, h.unique, EINVAL);
    }
    return;
  }
  req.body = request + sizeof(fuse_in_header);
  req.body_len = len - sizeof(fuse_in_header) - ext_len;

  bool initialized;
  {
    absl::MutexLock lock(&mu_);
    initialized = params_.has_value();
  }
  if (h.opcode == FUSE_INIT) {
    HandleInit(req, sink);
    return;
  }
  if (!initialized) {
    // The kernel sends nothing before INIT; anything else is garbage.
    SendError(sink, h.unique, EPROTO);
    return;
  }

  switch (h.opcode) {
    case FUSE_LOOKUP:
      HandleLookup(req, sink);
      return;
    case FUSE_FORGET:
    case FUSE_BATCH_FORGET:
      // Lookups are not counted (inode numbers are never reused), and FORGET has no reply.
      return;
    case FUSE_INTERRUPT:
      // Reads finish on their own (timeouts live in the disk); INTERRUPT has no reply.
      return;
    case FUSE_GETATTR:
      HandleGetattr(req, sink);
      return;
    case FUSE_OPEN:
      HandleOpen(req, sink, /*dir=*/false);
      return;
    case FUSE_OPENDIR:
      HandleOpen(req, sink, /*dir=*/true);
      return;
    case FUSE_READ:
      HandleRead(req, scratch, sink);
      return;
    case FUSE_READDIR:
      HandleReaddir(req, scratch, sink);
      return;
    case FUSE_RELEASE:
    case FUSE_RELEASEDIR:
    case FUSE_FLUSH:
      // File handles are inode numbers: nothing to free.
      SendReply(sink, h.unique, 0, nullptr, 0);
      return;
    case FUSE_STATFS:
      HandleStatfs(req, sink);
      return;
    case FUSE_ACCESS:
      HandleAccess(req, sink);
      return;
    case FUSE_DESTROY: {
      absl::MutexLock lock(&mu_);
      destroyed_ = true;
    }
      SendReply(sink, h.unique, 0, nullptr, 0);
      return;
    default:
      SendError(sink, h.unique, ENOSYS);
      return;
  }
}

void FuseHandler::HandleInit(const Request& req, FuseReplySink* sink) {
  const uint64_t unique = req.header.unique;
  fuse_init_in in;
  // Every kernel sends at least major, minor, max_readahead and flags.
  if (!req.Arg(&in, offsetof(fuse_init_in, flags2))) {
    SendError(sink, unique, EINVAL);
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    if (params_.has_value()) {
      // INIT happens once per connection.
      SendError(sink, unique, EPROTO);
      return;
    }
  }
  if (in.major < FUSE_KERNEL_VERSION) {
    SendError(sink, unique, EPROTO);
    return;
  }
  fuse_init_out out{};
  out.major = FUSE_KERNEL_VERSION;
  out.minor = kOurMinor;
  if (in.major > FUSE_KERNEL_VERSION) {
    // A newer major: answer with ours only; the kernel then sends INIT again (protocol rule).
    SendStruct(sink, unique, out);
    return;
  }
  if (in.minor < kOldestMinor) {
    SendError(sink, unique, EPROTO);
    return;
  }
  uint64_t kernel_flags = in.flags;
  if ((in.flags & FUSE_INIT_EXT) && req.body_len >= offsetof(fuse_init_in, unused)) {
    kernel_flags |= static_cast<uint64_t>(in.flags2) << 32;
  }
  uint64_t granted = kernel_flags & kWantedFlags;

  FuseConnParams params;
  params.major = FUSE_KERNEL_VERSION;
  params.minor = std::min(in.minor, kOurMinor);
  params.page_size = static_cast<uint32_t>(::sysconf(_SC_PAGESIZE));
  params.max_pages = std::clamp<uint32_t>(options_.max_pages, 1, 256);
  params.max_write = FuseConnParams::kOfferedMaxWrite;
  params.flags = granted;
  // The kernel never raises read-ahead above what it offered; take all of it.
  params.max_readahead = std::min(in.max_readahead, params.MaxRead());

  out.minor = params.minor;
  out.max_readahead = params.max_readahead;
  out.flags = static_cast<uint32_t>(granted);
  out.flags2 = static_cast<uint32_t>(granted >> 32);
  out.max_background = options_.max_background;
  out.congestion_threshold = options_.congestion_threshold;
  out.max_write = params.max_write;
  out.time_gran = 1;
  out.max_pages = static_cast<uint16_t>(params.max_pages);
  {
    absl::MutexLock lock(&mu_);
    if (params_.has_value()) {
      SendError(sink, unique, EPROTO);
      return;
    }
    params_ = params;
  }
  SendStruct(sink, unique, out);
}

void FuseHandler::FillAttr(uint64_t ino, uint64_t size, void* attr_out) const {
  fuse_attr& attr = *static_cast<fuse_attr*>(attr_out);
  attr = fuse_attr{};
  attr.ino = ino;
  attr.atime = attr.mtime = attr.ctime = static_cast<uint64_t>(options_.mtime_sec);
  attr.blksize = 4096;
  if (ino == FUSE_ROOT_ID) {
    attr.mode = S_IFDIR | 0555;
    attr.nlink = 2;
    attr.size = 4096;
    attr.blocks = 8;
  } else {
    attr.mode = S_IFREG | 0444;
    attr.nlink = 1;
    attr.size = size;
    attr.blocks = (size + 511) / 512;
  }
}

void FuseHandler::HandleLookup(const Request& req, FuseReplySink* sink) {
  const uint64_t unique = req.header.unique;
  if (req.header.nodeid != FUSE_ROOT_ID) {
    SendError(sink, unique, req.header.nodeid < FuseFileTable::kFirstFileIno ? ENOENT : ENOTDIR);
    return;
  }
  // The name is NUL-terminated inside the payload.
  const void* nul = std::memchr(req.body, '\0', req.body_len);
  if (nul == nullptr) {
    SendError(sink, unique, EINVAL);
    return;
  }
  absl::string_view name(req.body, static_cast<size_t>(static_cast<const char*>(nul) - req.body));
  std::optional<FuseFileInfo> info = table_->Lookup(name);
  if (!info.has_value()) {
    SendError(sink, unique, ENOENT);
    return;
  }
  fuse_entry_out out{};
  out.nodeid = info->ino;
  out.generation = 0;  // inode numbers are unique for the connection's lifetime
  SplitDuration(options_.entry_timeout, &out.entry_valid, &out.entry_valid_nsec);
  SplitDuration(options_.attr_timeout, &out.attr_valid, &out.attr_valid_nsec);
  FillAttr(info->ino, info->size, &out.attr);
  SendStruct(sink, unique, out);
}

void FuseHandler::HandleGetattr(const Request& req, FuseReplySink* sink) {
  const uint64_t unique = req.header.unique;
  const uint64_t ino = req.header.nodeid;
  uint64_t size = 0;
  if (ino != FUSE_ROOT_ID) {
    FuseFileInfo info;
    if (table_->Disk(ino, &info) == nullptr) {
      SendError(sink, unique, ENOENT);
      return;
    }
    size = info.size;
  }
  fuse_attr_out out{};
  SplitDuration(options_.attr_timeout, &out.attr_valid, &out.attr_valid_nsec);
  FillAttr(ino, size, &out.attr);
  SendStruct(sink, unique, out);
}

void FuseHandler::HandleOpen(const Request& req, FuseReplySink* sink, bool dir) {
  const uint64_t unique = req.header.unique;
  const uint64_t ino = req.header.nodeid;
  fuse_open_in in;
  if (!req.Arg(&in)) {
    SendError(sink, unique, EINVAL);
    return;
  }
  const bool is_root = ino == FUSE_ROOT_ID;
  if (!is_root && table_->Disk(ino, nullptr) == nullptr) {
    SendError(sink, unique, ENOENT);
    return;
  }
  if (dir != is_root) {
    SendError(sink, unique, dir ? ENOTDIR : EISDIR);
    return;
  }
  if ((in.flags & O_ACCMODE) != O_RDONLY || (in.flags & O_TRUNC)) {
    SendError(sink, unique, EROFS);
    return;
  }
  fuse_open_out out{};
  // The handle is the inode number: no per-open state, so a resumed process understands it.
  out.fh = ino;
  // The contents of a disk never change while it is attached: keep the page cache across opens.
  out.open_flags = dir ? 0 : FOPEN_KEEP_CACHE;
  SendStruct(sink, unique, out);
}

void FuseHandler::HandleRead(const Request& req, std::vector<char>* scratch, FuseReplySink* sink) {
  const uint64_t unique = req.header.unique;
  fuse_read_in in;
  // Kernels before 7.9 sent 24 bytes; we require 7.23, which sends the whole struct.
  if (!req.Arg(&in, offsetof(fuse_read_in, lock_owner))) {
    SendError(sink, unique, EINVAL);
    return;
  }
  reads_.fetch_add(1, std::memory_order_relaxed);
  FuseFileInfo info;
  std::shared_ptr<RandomAccessFile> disk = table_->Disk(req.header.nodeid, &info);
  if (disk == nullptr) {
    SendError(sink, unique, req.header.nodeid == FUSE_ROOT_ID ? EISDIR : EIO);
    return;
  }
  uint32_t max_read;
  {
    absl::MutexLock lock(&mu_);
    max_read = params_->MaxRead();
  }
  if (in.size > max_read) {
    // More than we negotiated: the kernel would not send it; refuse rather than allocate.
    SendError(sink, unique, EINVAL);
    return;
  }
  if (in.offset >= info.size || in.size == 0) {
    SendReply(sink, unique, 0, nullptr, 0);
    return;
  }
  size_t want = static_cast<size_t>(std::min<uint64_t>(in.size, info.size - in.offset));
  if (scratch->size() < want) scratch->resize(std::max<size_t>(want, max_read));
  // Every read is timed only at log level trace: this is the hottest path of blockd.
  const bool timed = spdlog::should_log(spdlog::level::trace);
  const absl::Time start = timed ? absl::Now() : absl::InfinitePast();
  absl::StatusOr<size_t> got = disk->Pread(in.offset, want, scratch->data());
  if (timed) {
    spdlog::trace("fuse read {} {}+{}: {:.2f} ms", info.name, in.offset, want,
                  absl::ToDoubleMilliseconds(absl::Now() - start));
  }
  // A short read inside the file would tell the kernel the file ended early (it trims its
  // cached size); only whole answers or an error go back.
  if (!got.ok() || *got != want) {
    read_errors_.fetch_add(1, std::memory_order_relaxed);
    SendError(sink, unique, EIO);
    return;
  }
  SendReply(sink, unique, 0, scratch->data(), want);
}

void FuseHandler::HandleReaddir(const Request& req, std::vector<char>* scratch,
                                FuseReplySink* sink) {
  const uint64_t unique = req.header.unique;
  fuse_read_in in;
  if (!req.Arg(&in, offsetof(fuse_read_in, lock_owner))) {
    SendError(sink, unique, EINVAL);
    return;
  }
  if (req.header.nodeid != FUSE_ROOT_ID) {
    SendError(sink, unique, ENOTDIR);
    return;
  }
  uint32_t max_read;
  {
    absl::MutexLock lock(&mu_);
    max_read = params_->MaxRead();
  }
  // Directory offsets (cookies): 1 after ".", 2 after "..", ino + 2 after a file; they stay
  // valid while files come and go because inode numbers only grow.
  const size_t limit = std::min<size_t>(in.size, max_read);
  if (scratch->size() < limit) scratch->resize(std::max<size_t>(limit, max_read));
  size_t used = 0;
  auto add = [&](uint64_t ino, uint64_t cookie, absl::string_view name, uint32_t type) {
    size_t rec = FUSE_DIRENT_ALIGN(FUSE_NAME_OFFSET + name.size());
    if (used + rec > limit) return false;
    char* p = scratch->data() + used;
    std::memset(p, 0, rec);
    fuse_dirent d{};
    d.ino = ino;
    d.off = cookie;
    d.namelen = static_cast<uint32_t>(name.size());
    d.type = type;
    std::memcpy(p, &d, FUSE_NAME_OFFSET);
    std::memcpy(p + FUSE_NAME_OFFSET, name.data(), name.size());
    used += rec;
    return true;
  };
  uint64_t offset = in.offset;
  bool full = false;
  if (offset < 1) {
    full = !add(FUSE_ROOT_ID, 1, ".", S_IFDIR >> 12);
    if (!full) offset = 1;
  }
  if (!full && offset < 2) {
    full = !add(FUSE_ROOT_ID, 2, "..", S_IFDIR >> 12);
    if (!full) offset = 2;
  }
  while (!full) {
    uint64_t after = offset >= 2 ? offset - 2 : 0;
    std::vector<FuseFileInfo> batch = table_->ListAfter(after, 64);
    if (batch.empty()) break;
    for (const FuseFileInfo& f : batch) {
      if (!add(f.ino, f.ino + 2, f.name, S_IFREG >> 12)) {
        full = true;
        break;
      }
      offset = f.ino + 2;
    }
  }
  SendReply(sink, unique, 0, scratch->data(), used);
}

void FuseHandler::HandleStatfs(const Request& req, FuseReplySink* sink) {
  fuse_statfs_out out{};
  out.st.bsize = 4096;
  out.st.frsize = 4096;
  out.st.blocks = (table_->TotalSize() + 4095) / 4096;
  out.st.files = table_->size() + 1;
  out.st.namelen = 255;
  SendStruct(sink, req.header.unique, out);
}

void FuseHandler::HandleAccess(const Request& req, FuseReplySink* sink) {
  const uint64_t unique = req.header.unique;
  fuse_access_in in;
  if (!req.Arg(&in)) {
    SendError(sink, unique, EINVAL);
    return;
  }
  if (req.header.nodeid != FUSE_ROOT_ID && table_->Disk(req.header.nodeid, nullptr) == nullptr) {
    SendError(sink, unique, ENOENT);
    return;
  }
  if (in.mask & W_OK) {
    SendError(sink, unique, EROFS);
    return;
  }
  if ((in.mask & X_OK) && req.header.nodeid != FUSE_ROOT_ID) {
    SendError(sink, unique, EACCES);
    return;
  }
  SendReply(sink, unique, 0, nullptr, 0);
}

}  // namespace dadi::blockstore
