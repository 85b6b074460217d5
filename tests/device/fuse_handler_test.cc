// FuseHandler without a kernel: requests are built by hand, replies recorded.
#include "blockstore/device/fuse_handler.h"

#include <fcntl.h>
#include <linux/fuse.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "gtest/gtest.h"

namespace dadi::blockstore {
namespace {

struct Reply {
  fuse_out_header header;
  std::string payload;
};

class RecordingSink final : public FuseReplySink {
 public:
  void Send(const struct iovec* iov, int iovcnt) override {
    std::string bytes;
    for (int i = 0; i < iovcnt; ++i)
      bytes.append(static_cast<const char*>(iov[i].iov_base), iov[i].iov_len);
    ASSERT_GE(bytes.size(), sizeof(fuse_out_header));
    Reply r;
    std::memcpy(&r.header, bytes.data(), sizeof(r.header));
    EXPECT_EQ(r.header.len, bytes.size());
    r.payload = bytes.substr(sizeof(fuse_out_header));
    replies.push_back(std::move(r));
  }
  std::vector<Reply> replies;
};

class FailingFile final : public RandomAccessFile {
 public:
  explicit FailingFile(uint64_t size) : size_(size) {}
  uint64_t Size() const override { return size_; }
  absl::StatusOr<size_t> Pread(uint64_t, size_t, char*) const override {
    return absl::UnavailableError("registry unreachable");
  }
  std::string Name() const override { return "failing"; }

 private:
  uint64_t size_;
};

// A file that answers short in the middle, which must not reach the kernel as data.
class ShortFile final : public RandomAccessFile {
 public:
  uint64_t Size() const override { return 1 << 20; }
  absl::StatusOr<size_t> Pread(uint64_t, size_t n, char* buf) const override {
    std::memset(buf, 'x', n / 2);
    return n / 2;
  }
  std::string Name() const override { return "short"; }
};

std::string Request(uint32_t opcode, uint64_t nodeid, const std::string& body, uint64_t unique) {
  fuse_in_header h{};
  h.len = static_cast<uint32_t>(sizeof(h) + body.size());
  h.opcode = opcode;
  h.unique = unique;
  h.nodeid = nodeid;
  std::string out(reinterpret_cast<const char*>(&h), sizeof(h));
  return out + body;
}

template <typename T>
std::string Bytes(const T& v) {
  return std::string(reinterpret_cast<const char*>(&v), sizeof(v));
}

template <typename T>
T As(const std::string& payload) {
  T v{};
  EXPECT_GE(payload.size(), sizeof(T));
  std::memcpy(&v, payload.data(), std::min(payload.size(), sizeof(T)));
  return v;
}

class FuseHandlerTest : public ::testing::Test {
 protected:
  FuseHandlerTest() : table_(std::make_shared<FuseFileTable>()), handler_(table_, {}) {
    for (size_t i = 0; i < data_.size(); ++i) data_[i] = static_cast<char>(i * 7 + i / 4096);
  }

  Reply Send(const std::string& request) {
    size_t before = sink_.replies.size();
    handler_.Handle(request.data(), request.size(), &scratch_, &sink_);
    EXPECT_EQ(sink_.replies.size(), before + 1) << "no reply";
    if (sink_.replies.size() != before + 1) return Reply{};
    EXPECT_EQ(sink_.replies.back().header.unique, next_unique_ - 1);
    return sink_.replies.back();
  }

  Reply Op(uint32_t opcode, uint64_t nodeid, const std::string& body) {
    return Send(Request(opcode, nodeid, body, next_unique_++));
  }

  fuse_init_out Init(uint32_t flags = FUSE_ASYNC_READ | FUSE_BIG_WRITES | FUSE_MAX_PAGES |
                                      FUSE_PARALLEL_DIROPS | FUSE_WRITEBACK_CACHE) {
    fuse_init_in in{};
    in.major = 7;
    in.minor = 38;
    in.max_readahead = 128 * 1024;
    in.flags = flags;
    Reply r = Op(FUSE_INIT, 0, Bytes(in));
    EXPECT_EQ(r.header.error, 0);
    return As<fuse_init_out>(r.payload);
  }

  Reply Read(uint64_t ino, uint64_t offset, uint32_t size) {
    fuse_read_in in{};
    in.fh = ino;
    in.offset = offset;
    in.size = size;
    return Op(FUSE_READ, ino, Bytes(in));
  }

  std::string data_ = std::string(3 * 4096 + 123, '\0');
  std::shared_ptr<FuseFileTable> table_;
  FuseHandler handler_;
  RecordingSink sink_;
  std::vector<char> scratch_;
  uint64_t next_unique_ = 1;
};

TEST_F(FuseHandlerTest, InitGrantsOnlyWhatBothSidesWant) {
  fuse_init_out out = Init();
  EXPECT_EQ(out.major, 7u);
  EXPECT_EQ(out.minor, 38u);
  EXPECT_EQ(out.max_pages, 256);
  EXPECT_GE(out.max_write, 1u << 20);
  EXPECT_TRUE(out.flags & FUSE_MAX_PAGES);
  EXPECT_TRUE(out.flags & FUSE_ASYNC_READ);
  EXPECT_TRUE(out.flags & FUSE_PARALLEL_DIROPS);
  EXPECT_FALSE(out.flags & FUSE_WRITEBACK_CACHE) << "read-only: never a writeback cache";
  ASSERT_TRUE(handler_.params().has_value());
  EXPECT_EQ(handler_.params()->MaxRead(), 256u * handler_.params()->page_size);
  // A second INIT on the same connection is a protocol error.
  fuse_init_in again{};
  again.major = 7;
  again.minor = 38;
  EXPECT_EQ(Op(FUSE_INIT, 0, Bytes(again)).header.error, -EPROTO);
}

TEST_F(FuseHandlerTest, InitWithNewerMajorAnswersOurVersionOnly) {
  fuse_init_in in{};
  in.major = 8;
  in.minor = 0;
  fuse_init_out out = As<fuse_init_out>(Op(FUSE_INIT, 0, Bytes(in)).payload);
  EXPECT_EQ(out.major, 7u);
  EXPECT_FALSE(handler_.params().has_value());
}

TEST_F(FuseHandlerTest, RequestsBeforeInitAreRefused) {
  EXPECT_EQ(Op(FUSE_GETATTR, FUSE_ROOT_ID, "").header.error, -EPROTO);
}

TEST_F(FuseHandlerTest, LookupGetattrOpenReadOfAFile) {
  Init();
  absl::StatusOr<uint64_t> ino = table_->Add("disk-1", NewMemoryFile(data_));
  ASSERT_TRUE(ino.ok());
  Reply r = Op(FUSE_LOOKUP, FUSE_ROOT_ID, std::string("disk-1") + '\0');
  ASSERT_EQ(r.header.error, 0);
  fuse_entry_out entry = As<fuse_entry_out>(r.payload);
  EXPECT_EQ(entry.nodeid, *ino);
  EXPECT_EQ(entry.attr.size, data_.size());
  EXPECT_EQ(entry.attr.mode, S_IFREG | 0444u);

  EXPECT_EQ(Op(FUSE_LOOKUP, FUSE_ROOT_ID, std::string("nope") + '\0').header.error, -ENOENT);
  // A name without its terminating NUL is outside bytes we must not run past.
  EXPECT_EQ(Op(FUSE_LOOKUP, FUSE_ROOT_ID, "disk-1").header.error, -EINVAL);

  fuse_attr_out attr = As<fuse_attr_out>(Op(FUSE_GETATTR, *ino, "").payload);
  EXPECT_EQ(attr.attr.size, data_.size());
  fuse_attr_out root = As<fuse_attr_out>(Op(FUSE_GETATTR, FUSE_ROOT_ID, "").payload);
  EXPECT_TRUE(S_ISDIR(root.attr.mode));

  fuse_open_in open_in{};
  open_in.flags = O_RDONLY;
  r = Op(FUSE_OPEN, *ino, Bytes(open_in));
  ASSERT_EQ(r.header.error, 0);
  EXPECT_TRUE(As<fuse_open_out>(r.payload).open_flags & FOPEN_KEEP_CACHE);
  open_in.flags = O_RDWR;
  EXPECT_EQ(Op(FUSE_OPEN, *ino, Bytes(open_in)).header.error, -EROFS);

  r = Read(*ino, 4095, 4098);
  ASSERT_EQ(r.header.error, 0);
  EXPECT_EQ(r.payload, data_.substr(4095, 4098));
  // Reads at the end are short; past the end, empty.
  r = Read(*ino, data_.size() - 10, 4096);
  EXPECT_EQ(r.payload, data_.substr(data_.size() - 10));
  EXPECT_EQ(Read(*ino, data_.size() + 5, 4096).payload, "");
  // More than negotiated is refused rather than allocated.
  EXPECT_EQ(Read(*ino, 0, handler_.params()->MaxRead() + 1).header.error, -EINVAL);

  ASSERT_TRUE(table_->Remove("disk-1").ok());
  EXPECT_EQ(Read(*ino, 0, 10).header.error, -EIO);
  EXPECT_EQ(Op(FUSE_GETATTR, *ino, "").header.error, -ENOENT);
}

TEST_F(FuseHandlerTest, DiskErrorsAndShortReadsBecomeEio) {
  Init();
  absl::StatusOr<uint64_t> failing = table_->Add("failing", std::make_shared<FailingFile>(8192));
  absl::StatusOr<uint64_t> short_file = table_->Add("short", std::make_shared<ShortFile>());
  ASSERT_TRUE(failing.ok() && short_file.ok());
  EXPECT_EQ(Read(*failing, 0, 4096).header.error, -EIO);
  Reply r = Read(*short_file, 0, 4096);
  EXPECT_EQ(r.header.error, -EIO);
  EXPECT_EQ(r.payload, "");
  EXPECT_EQ(handler_.read_errors(), 2u);
}

TEST_F(FuseHandlerTest, MalformedRequestsAreRefused) {
  Init();
  ASSERT_TRUE(table_->Add("d", NewMemoryFile(data_)).ok());
  // Header length disagreeing with what was read.
  std::string req = Request(FUSE_GETATTR, FUSE_ROOT_ID, "", next_unique_++);
  req += "extra";
  EXPECT_EQ(Send(req).header.error, -EINVAL);
  // Truncated argument struct.
  EXPECT_EQ(Op(FUSE_READ, 2, "short").header.error, -EINVAL);
  EXPECT_EQ(Op(FUSE_OPEN, 2, "").header.error, -EINVAL);
  // Extension length beyond the request.
  fuse_in_header h{};
  h.len = sizeof(h);
  h.opcode = FUSE_GETATTR;
  h.unique = next_unique_++;
  h.nodeid = FUSE_ROOT_ID;
  h.total_extlen = 100;
  EXPECT_EQ(Send(Bytes(h)).header.error, -EINVAL);
  // Fewer bytes than a header: nothing to answer.
  size_t before = sink_.replies.size();
  handler_.Handle("abc", 3, &scratch_, &sink_);
  EXPECT_EQ(sink_.replies.size(), before);
  // Operations we do not implement, and those that must not be answered.
  EXPECT_EQ(Op(FUSE_WRITE, 2, std::string(100, 'w')).header.error, -ENOSYS);
  EXPECT_EQ(Op(FUSE_SETXATTR, 2, "").header.error, -ENOSYS);
  EXPECT_EQ(Op(12345, 2, "").header.error, -ENOSYS);
  before = sink_.replies.size();
  fuse_forget_in forget{};
  forget.nlookup = 1;
  std::string f = Request(FUSE_FORGET, 2, Bytes(forget), next_unique_++);
  handler_.Handle(f.data(), f.size(), &scratch_, &sink_);
  EXPECT_EQ(sink_.replies.size(), before);
}

TEST_F(FuseHandlerTest, ReaddirListsFilesAndResumesAtCookies) {
  Init();
  for (std::string name : {"a", "bb", "ccc"}) {
    ASSERT_TRUE(table_->Add(name, NewMemoryFile(data_)).ok());
  }
  auto list = [&](uint64_t offset, uint32_t size) {
    fuse_read_in in{};
    in.offset = offset;
    in.size = size;
    Reply r = Op(FUSE_READDIR, FUSE_ROOT_ID, Bytes(in));
    EXPECT_EQ(r.header.error, 0);
    std::vector<std::pair<std::string, uint64_t>> entries;
    size_t pos = 0;
    while (pos + FUSE_NAME_OFFSET <= r.payload.size()) {
      fuse_dirent d;
      std::memcpy(&d, r.payload.data() + pos, FUSE_NAME_OFFSET);
      entries.emplace_back(r.payload.substr(pos + FUSE_NAME_OFFSET, d.namelen), d.off);
      pos += FUSE_DIRENT_ALIGN(FUSE_NAME_OFFSET + d.namelen);
    }
    EXPECT_EQ(pos, r.payload.size());
    return entries;
  };
  auto all = list(0, 4096);
  ASSERT_EQ(all.size(), 5u);
  EXPECT_EQ(all[0].first, ".");
  EXPECT_EQ(all[1].first, "..");
  EXPECT_EQ(all[2].first, "a");
  EXPECT_EQ(all[4].first, "ccc");
  // A small buffer takes one entry at a time; continuing at each cookie yields the rest.
  std::vector<std::string> names;
  uint64_t cookie = 0;
  for (;;) {
    auto part = list(cookie, 32);
    if (part.empty()) break;
    ASSERT_EQ(part.size(), 1u);
    names.push_back(part[0].first);
    cookie = part[0].second;
  }
  EXPECT_EQ(names, (std::vector<std::string>{".", "..", "a", "bb", "ccc"}));
  // A file removed and one added meanwhile: the listing stays consistent past the cookie.
  ASSERT_TRUE(table_->Remove("bb").ok());
  ASSERT_TRUE(table_->Add("dd", NewMemoryFile(data_)).ok());
  auto rest = list(all[2].second, 4096);
  ASSERT_EQ(rest.size(), 2u);
  EXPECT_EQ(rest[0].first, "ccc");
  EXPECT_EQ(rest[1].first, "dd");
}

TEST_F(FuseHandlerTest, ResumedHandlerServesWithoutInit) {
  Init();
  ASSERT_TRUE(table_->Add("disk", NewMemoryFile(data_)).ok());
  std::string encoded = handler_.params()->Encode();
  absl::StatusOr<FuseConnParams> params = FuseConnParams::Decode(encoded);
  ASSERT_TRUE(params.ok()) << params.status();
  EXPECT_EQ(params->MaxRead(), handler_.params()->MaxRead());
  EXPECT_EQ(params->flags, handler_.params()->flags);

  // A file added and removed before the restart: its inode must not be handed out again.
  ASSERT_TRUE(table_->Add("gone", NewMemoryFile(data_)).ok());
  ASSERT_TRUE(table_->Remove("gone").ok());
  // The new process rebuilds its table from the recorded state and the reopened disks.
  absl::StatusOr<FuseTableState> state = FuseTableState::Decode(table_->State().Encode());
  ASSERT_TRUE(state.ok()) << state.status();
  ASSERT_EQ(state->files.size(), 1u);
  auto table = std::make_shared<FuseFileTable>();
  for (const FuseFileInfo& f : state->files) {
    ASSERT_TRUE(table->Restore(f, NewMemoryFile(data_)).ok());
  }
  table->AdvanceNextIno(state->next_ino);
  EXPECT_FALSE(table->Restore(FuseFileInfo{"other", 9, 3}, NewMemoryFile(data_)).ok())
      << "a disk of another size than the kernel knows";
  FuseHandler resumed(table, {}, *params);
  RecordingSink sink;
  std::vector<char> scratch;
  fuse_read_in in{};
  in.offset = 100;
  in.size = 50;
  std::string req = Request(FUSE_READ, 2, Bytes(in), 77);
  resumed.Handle(req.data(), req.size(), &scratch, &sink);
  ASSERT_EQ(sink.replies.size(), 1u);
  EXPECT_EQ(sink.replies[0].payload, data_.substr(100, 50));
  // New files never reuse an inode number the kernel may still hold.
  absl::StatusOr<uint64_t> ino = table->Add("next", NewMemoryFile(data_));
  ASSERT_TRUE(ino.ok());
  EXPECT_EQ(*ino, table_->next_ino());
}

TEST(FuseConnParamsTest, DecodeRejectsDamage) {
  FuseConnParams p;
  p.major = 7;
  p.minor = 38;
  p.max_write = 1 << 20;
  p.max_pages = 256;
  p.page_size = 4096;
  std::string good = p.Encode();
  ASSERT_TRUE(FuseConnParams::Decode(good).ok());
  EXPECT_FALSE(FuseConnParams::Decode(good.substr(1)).ok());
  std::string bad = good;
  bad[0] = 'X';
  EXPECT_FALSE(FuseConnParams::Decode(bad).ok());
  p.page_size = 4095;
  EXPECT_FALSE(FuseConnParams::Decode(p.Encode()).ok());
  p.page_size = 4096;
  p.minor = 3;
  EXPECT_FALSE(FuseConnParams::Decode(p.Encode()).ok());
}

TEST(FuseTableStateTest, RoundTripAndDamage) {
  FuseTableState state;
  state.next_ino = 10;
  state.files = {{"a", 2, 100}, {"sha256-b", 7, 1ull << 40}};
  std::string good = state.Encode();
  absl::StatusOr<FuseTableState> back = FuseTableState::Decode(good);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->next_ino, 10u);
  ASSERT_EQ(back->files.size(), 2u);
  EXPECT_EQ(back->files[1].name, "sha256-b");
  EXPECT_EQ(back->files[1].size, 1ull << 40);
  // Every truncation, and trailing garbage, is refused.
  for (size_t n = 0; n < good.size(); ++n) {
    EXPECT_FALSE(FuseTableState::Decode(good.substr(0, n)).ok()) << n;
  }
  EXPECT_FALSE(FuseTableState::Decode(good + "x").ok());
  // An inode at or past next_ino, out of order, or a bad name.
  for (auto files : std::vector<std::vector<FuseFileInfo>>{
           {{"a", 10, 1}}, {{"a", 5, 1}, {"b", 3, 1}}, {{"a/b", 2, 1}}, {{"a", 1, 1}}}) {
    FuseTableState bad;
    bad.next_ino = 10;
    bad.files = files;
    EXPECT_FALSE(FuseTableState::Decode(bad.Encode()).ok());
  }
  // A count that cannot fit does not make the decoder reserve memory for it.
  std::string huge = FuseTableState{}.Encode();
  huge[20] = huge[21] = huge[22] = huge[23] = '\xff';
  EXPECT_FALSE(FuseTableState::Decode(huge).ok());
}

TEST(FuseFileTableTest, NamesAreChecked) {
  FuseFileTable table;
  for (const std::string& bad : std::vector<std::string>{
           "", ".", "..", "a/b", "a b", std::string(256, 'x'), std::string("a\0b", 3)}) {
    EXPECT_EQ(table.Add(bad, NewMemoryFile("x")).status().code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
  EXPECT_TRUE(table.Add("sha256-abc_1.2", NewMemoryFile("x")).ok());
  EXPECT_EQ(table.Add("sha256-abc_1.2", NewMemoryFile("x")).status().code(),
            absl::StatusCode::kAlreadyExists);
}

}  // namespace
}  // namespace dadi::blockstore
