// The real dadi-blockd binary, driven over its socket: ext4 images made with mkfs.ext4 -d are
// written as overlaybd layer blobs (writable layer → commit → ZFile → tar envelope), pushed to
// a real docker-registry, attached through FUSE + loop and read through the mount point.
// Needs root, /dev/fuse, /dev/loop-control, mkfs.ext4, debugfs and docker-registry; skipped
// otherwise. Every daemon, mount and loop device is gone when a test ends, passed or failed.
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "blockstore/blob/layer_blob_writer.h"
#include "blockstore/file/file.h"
#include "blockstore/lsmt/sealed_layer_writer.h"
#include "blockstore/lsmt/writable_layer.h"
#include "blockstore/remote/digest.h"
#include "blockstore/remote/reference.h"
#include "blockstore/remote/registry_client.h"
#include "blockstore/remote/startup_trace.h"
#include "dadi/blockd/v1/blockd.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/remote/test_servers.h"
#include "tests/support/kernel_state.h"
#include "tests/support/scratch_dir.h"

namespace dadi::blockstore {
namespace {

namespace fs = std::filesystem;
using ::dadi::testing::Eventually;
using ::dadi::testing::LoopsUnder;
using ::dadi::testing::MountsUnder;
namespace pb = ::dadi::blockd::v1;

constexpr uint64_t kImageSize = 32 << 20;
constexpr uint64_t kBlock = 4096;

// Bytes of the file at `path` that are in the page cache (mincore of a mapping).
uint64_t ResidentBytes(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  struct stat st;
  uint64_t resident = 0;
  if (::fstat(fd, &st) == 0 && st.st_size > 0) {
    void* map = ::mmap(nullptr, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    if (map != MAP_FAILED) {
      const size_t page = ::sysconf(_SC_PAGESIZE);
      std::vector<unsigned char> in((st.st_size + page - 1) / page);
      if (::mincore(map, st.st_size, in.data()) == 0) {
        for (unsigned char c : in) resident += (c & 1) ? page : 0;
      }
      ::munmap(map, st.st_size);
    }
  }
  ::close(fd);
  return std::min<uint64_t>(resident, st.st_size);
}

size_t Occurrences(absl::string_view text, absl::string_view what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != absl::string_view::npos; at = text.find(what, at + 1)) {
    ++n;
  }
  return n;
}

std::string ReadWhole(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "<error: cannot open " + path + ">";
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void WriteFile(const std::string& path, const std::string& data) {
  std::ofstream(path, std::ios::binary)
      .write(data.data(), static_cast<std::streamsize>(data.size()));
}

std::string RandomData(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string data(n, '\0');
  for (size_t i = 0; i < n; i += 8) {
    uint64_t w = rng();
    std::memcpy(data.data() + i, &w, std::min<size_t>(8, n - i));
  }
  return data;
}

bool HaveTool(const char* name) {
  for (const char* dir : {"/usr/sbin/", "/sbin/", "/usr/bin/", "/bin/"}) {
    if (::access((std::string(dir) + name).c_str(), X_OK) == 0) return true;
  }
  return false;
}

// Makes an ext4 image of kImageSize holding `files` (path → content).
void MakeExt4(const std::string& work, const std::map<std::string, std::string>& files,
              const std::string& image_path) {
  const std::string src = work + "/src-" + fs::path(image_path).filename().string();
  fs::create_directories(src);
  for (const auto& [name, data] : files) {
    fs::create_directories(fs::path(src + "/" + name).parent_path());
    WriteFile(src + "/" + name, data);
  }
  { std::ofstream f(image_path, std::ios::binary); }
  fs::resize_file(image_path, kImageSize);
  ASSERT_TRUE(testing::RunCommand({"mkfs.ext4", "-q", "-F", "-b", "4096", "-E",
                                   "lazy_itable_init=0,lazy_journal_init=0", "-d", src, image_path},
                                  work + "/mkfs.log")
                  .ok())
      << ReadWhole(work + "/mkfs.log");
}

struct Blob {
  std::string digest;
  uint64_t size = 0;
  std::string path;
};

// Writes `image` as an overlaybd layer blob holding the 4 KiB blocks that differ from `base`
// (all non-zero blocks without a base): changed blocks as data, blocks that became zero as
// zeroed ranges.
void MakeLayerBlob(const std::string& work, const std::string& name, const std::string& image,
                   const std::string* base, Blob* blob) {
  auto layer = WritableLayer::Create(work + "/" + name + ".data", work + "/" + name + ".index",
                                     LayerInfo{kImageSize, name, base ? "base" : "", "dadi-test"});
  ASSERT_TRUE(layer.ok()) << layer.status();
  const std::string zero(kBlock, '\0');
  for (uint64_t off = 0; off < image.size(); off += kBlock) {
    absl::string_view block(image.data() + off, kBlock);
    if (base != nullptr && absl::string_view(base->data() + off, kBlock) == block) continue;
    if (block == zero) {
      if (base != nullptr) {
        ASSERT_TRUE((*layer)->Discard(off, kBlock).ok());
      }
      continue;
    }
    ASSERT_TRUE((*layer)->Write(off, block).ok());
  }
  blob->path = work + "/" + name + ".blob";
  auto writer = LayerBlobFileWriter::Create(blob->path, ZFileWriterOptions{});
  ASSERT_TRUE(writer.ok()) << writer.status();
  ASSERT_TRUE((*layer)->Commit(writer->get()).ok());
  ASSERT_TRUE((*writer)->Close().ok());
  auto file = OpenLocalFile(blob->path);
  ASSERT_TRUE(file.ok());
  auto digest = Sha256DigestOfFile(**file);
  ASSERT_TRUE(digest.ok());
  blob->digest = *digest;
  blob->size = (*file)->Size();
}

// A dadi-blockd child process on a socket in the scratch directory. The destructor kills it
// (SIGKILL) if it still runs and unmounts whatever it left below the scratch directory.
class Daemon {
 public:
  explicit Daemon(std::string dir) : dir_(std::move(dir)) {}
  ~Daemon() {
    Kill();
    for (const std::string& m : MountsUnder(dir_ + "/")) ::umount2(m.c_str(), MNT_DETACH);
  }
  std::string socket() const { return dir_ + "/run/blockd.sock"; }
  std::string state_dir() const { return dir_ + "/state"; }

  absl::Status Start(const std::string& config_toml) {
    WriteFile(dir_ + "/blockd.toml", config_toml);
    const std::vector<std::string> args = {DADI_BLOCKD_BIN, "--config",    dir_ + "/blockd.toml",
                                           "--socket",      socket(),      "--state-dir",
                                           state_dir(),     "--cache-dir", dir_ + "/cache",
                                           "--log-level",   "debug"};
    pid_ = ::fork();
    if (pid_ < 0) return absl::InternalError("fork");
    if (pid_ == 0) {
      int log = ::open((dir_ + "/blockd.log").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      ::dup2(log, 2);
      std::vector<char*> argv;
      for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    for (int i = 0; i < 3000; ++i) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return absl::InternalError("dadi-blockd exited at start: " + Log());
      }
      if (Connectable()) return absl::OkStatus();
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return absl::DeadlineExceededError("dadi-blockd did not listen: " + Log());
  }

  // SIGTERM and wait (a minute at most, then SIGKILL); the exit status.
  int Stop() {
    if (pid_ <= 0) return -1;
    ::kill(pid_, SIGTERM);
    int status = 0;
    for (int i = 0; i < 6000; ++i) {
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    Kill();
    return -1;
  }

  void Kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

  std::unique_ptr<pb::Blockd::Stub> Connect() const {
    return pb::Blockd::NewStub(
        grpc::CreateChannel("unix:" + socket(), grpc::InsecureChannelCredentials()));
  }
  std::string Log() const { return ReadWhole(dir_ + "/blockd.log"); }

 private:
  bool Connectable() const {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::string path = socket();
    std::memcpy(sa.sun_path, path.c_str(), std::min(path.size() + 1, sizeof(sa.sun_path) - 1));
    bool ok = ::connect(fd, reinterpret_cast<const sockaddr*>(&sa), sizeof(sa)) == 0;
    ::close(fd);
    return ok;
  }

  std::string dir_;
  pid_t pid_ = -1;
};

class BlockdDaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root";
    if (::access("/dev/fuse", R_OK | W_OK) != 0) GTEST_SKIP() << "no /dev/fuse";
    if (::access("/dev/loop-control", R_OK | W_OK) != 0) GTEST_SKIP() << "no /dev/loop-control";
    for (const char* tool : {"mkfs.ext4", "debugfs", "docker-registry"}) {
      if (!HaveTool(tool)) GTEST_SKIP() << tool << " not installed";
    }
    fs::create_directories(scratch_.Join("registry"));
    auto registry = testing::TestRegistry::Start(scratch_.Join("registry"), {});
    ASSERT_TRUE(registry.ok()) << registry.status();
    registry_ = std::move(*registry);
    repository_ = registry_->host() + "/library/app";
    RegistryConfig config;
    config.hosts[registry_->host()].plain_http = true;
    client_ = std::make_unique<RegistryClient>(config);
    daemon_ = std::make_unique<Daemon>(scratch_.path());
  }

  void TearDown() override {
    daemon_.reset();  // kills, unmounts what is left
    for (const std::string& m : MountsUnder(scratch_.path() + "/")) {
      ADD_FAILURE() << "left mounted: " << m;
      ::umount2(m.c_str(), MNT_DETACH);
    }
    registry_.reset();
  }

  std::string Config(const std::string& extra = "") const {
    return absl::StrCat("readahead_bytes = 0\n", extra, "[registry]\nmax_attempts = 2\n",
                        "initial_backoff_ms = 10\nmax_backoff_ms = 20\n",
                        "connect_timeout_ms = 2000\nrequest_timeout_ms = 10000\n",
                        "[registry.hosts.\"", registry_->host(), "\"]\nplain_http = true\n");
  }

  void Push(const Blob& blob) {
    auto repo = ParseReference(repository_);
    ASSERT_TRUE(repo.ok());
    auto file = OpenLocalFile(blob.path);
    ASSERT_TRUE(file.ok());
    auto pushed = client_->PushBlob(*repo, blob.digest, **file);
    ASSERT_TRUE(pushed.ok()) << pushed.status();
  }

  // An image of `files`, as a one-layer blob pushed to the registry.
  void MakeImage(const std::string& name, const std::map<std::string, std::string>& files,
                 std::string* image, Blob* blob) {
    const std::string path = scratch_.Join(name + ".img");
    ASSERT_NO_FATAL_FAILURE(MakeExt4(scratch_.path(), files, path));
    *image = ReadWhole(path);
    ASSERT_EQ(image->size(), kImageSize);
    ASSERT_NO_FATAL_FAILURE(MakeLayerBlob(scratch_.path(), name, *image, nullptr, blob));
    ASSERT_NO_FATAL_FAILURE(Push(*blob));
  }

  // `req` is an AttachRequest or a WarmRequest.
  template <typename Request>
  void AddLayer(Request* req, const Blob& blob) const {
    pb::Layer* l = req->add_layers();
    l->set_digest(blob.digest);
    l->set_size(blob.size);
    l->set_repository(repository_);
  }

  // Attaches `blob` as a one-layer image, named `id` (empty: the default id); asserts success.
  void AttachBlob(pb::Blockd::Stub& stub, const Blob& blob, pb::AttachResponse* resp,
                  const std::string& id = "") {
    pb::AttachRequest req;
    AddLayer(&req, blob);
    if (!id.empty()) req.set_id(id);
    grpc::ClientContext ctx;
    grpc::Status s = stub.Attach(&ctx, req, resp);
    ASSERT_TRUE(s.ok()) << s.error_message() << "\n" << daemon_->Log();
  }

  void ExpectFiles(const std::string& mount, const std::map<std::string, std::string>& files) {
    for (const auto& [name, data] : files) {
      std::string got = ReadWhole(mount + "/" + name);
      EXPECT_TRUE(got == data) << name << ": " << got.size() << " bytes, want " << data.size();
    }
  }

  // GetTrace of attachment `id`: checks it covers data/read.bin (2 MiB) but not the 2 MiB
  // that were not read, and pushes it to the registry as a blob.
  void SaveAndPushTrace(pb::Blockd::Stub& stub, const std::string& id, Blob* trace_blob) {
    pb::GetTraceRequest trace_req;
    trace_req.set_id(id);
    pb::GetTraceResponse trace_resp;
    grpc::ClientContext ctx;
    grpc::Status s = stub.GetTrace(&ctx, trace_req, &trace_resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
    absl::StatusOr<StartupTrace> trace = ParseStartupTrace(trace_resp.trace());
    ASSERT_TRUE(trace.ok()) << trace.status();
    EXPECT_EQ(trace->virtual_size, kImageSize);
    // The files that hold the traced bytes: the one that was read, whole; not the other.
    bool read_file = false;
    for (const TracedFile& f : trace->files) {
      EXPECT_NE(f.path, "data/unread.bin");
      if (f.path != "data/read.bin") continue;
      read_file = true;
      uint64_t bytes = 0;
      for (const ByteRange& r : f.ranges) bytes += r.length;
      EXPECT_EQ(bytes, uint64_t{2} << 20);
    }
    EXPECT_TRUE(read_file) << trace_resp.trace().substr(0, 2000);
    EXPECT_EQ(trace->ranges.size(), trace_resp.ranges());
    uint64_t traced = 0;
    for (const TraceRange& r : trace->ranges) traced += r.length;
    EXPECT_GE(traced, uint64_t{2} << 20);  // the file that was read, at least
    EXPECT_LT(traced, uint64_t{4} << 20);  // not the one that was not
    const std::string path = scratch_.Join("trace.json");
    std::ofstream(path, std::ios::binary) << trace_resp.trace();
    *trace_blob = Blob{Sha256Digest(trace_resp.trace()), trace_resp.trace().size(), path};
    ASSERT_NO_FATAL_FAILURE(Push(*trace_blob));
  }

  // The traced image of the trace tests: data/read.bin and data/unread.bin (2 MiB each, made
  // from `seed` and `seed + 1`) in a one-layer image; the daemon started, the image attached,
  // read.bin read through it, and the attachment's trace saved and pushed.
  void RecordTracedImage(const std::string& name, uint64_t seed,
                         std::map<std::string, std::string>* files, Blob* blob,
                         std::unique_ptr<pb::Blockd::Stub>* stub, pb::AttachResponse* resp,
                         Blob* trace_blob) {
    *files = {{"data/read.bin", RandomData(2 << 20, seed)},
              {"data/unread.bin", RandomData(2 << 20, seed + 1)}};
    std::string image;
    ASSERT_NO_FATAL_FAILURE(MakeImage(name, *files, &image, blob));
    ASSERT_TRUE(daemon_->Start(Config()).ok()) << daemon_->Log();
    *stub = daemon_->Connect();
    ASSERT_NO_FATAL_FAILURE(AttachBlob(**stub, *blob, resp));
    EXPECT_TRUE(ReadWhole(resp->mount_point() + "/data/read.bin") == files->at("data/read.bin"));
    ASSERT_NO_FATAL_FAILURE(SaveAndPushTrace(**stub, resp->id(), trace_blob));
  }

  // Bytes attachment `id` fetched from the registry so far (its Stat), 0 when Stat fails.
  static uint64_t BytesFetched(pb::Blockd::Stub& stub, const std::string& id) {
    pb::StatRequest req;
    req.set_id(id);
    pb::StatResponse stat;
    grpc::ClientContext ctx;
    grpc::Status s = stub.Stat(&ctx, req, &stat);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return stat.bytes_fetched();
  }

  // Restarts the daemon with an empty node cache.
  void RestartCold() {
    EXPECT_EQ(daemon_->Stop(), 0) << daemon_->Log();
    fs::remove_all(scratch_.path() + "/cache");
    ASSERT_TRUE(daemon_->Start(Config()).ok()) << daemon_->Log();
  }

  testing::ScratchDir scratch_{"dadi-blockd"};
  std::unique_ptr<testing::TestRegistry> registry_;
  std::unique_ptr<RegistryClient> client_;
  std::string repository_;
  std::unique_ptr<Daemon> daemon_;
};

TEST_F(BlockdDaemonTest, AttachReadStatPrefetchAttachAgainDetachTwice) {
  const std::map<std::string, std::string> files = {{"etc/hello.txt", "hello from dadi-blockd\n"},
                                                    {"data/random.bin", RandomData(1 << 20, 1)},
                                                    {"data/odd", RandomData(100'003, 2)}};
  std::string image;
  Blob blob;
  ASSERT_NO_FATAL_FAILURE(MakeImage("one", files, &image, &blob));
  ASSERT_TRUE(daemon_->Start(Config()).ok()) << daemon_->Log();
  struct stat st;
  ASSERT_EQ(::stat(daemon_->socket().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat(fs::path(daemon_->socket()).parent_path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  auto stub = daemon_->Connect();

  pb::AttachResponse resp;
  ASSERT_NO_FATAL_FAILURE(AttachBlob(*stub, blob, &resp));
  // The default id is the chain id of the digests: for one layer, its digest's hex.
  EXPECT_EQ(resp.id(), blob.digest.substr(7));
  EXPECT_TRUE(absl::StartsWith(resp.device_path(), "/dev/loop")) << resp.device_path();
  EXPECT_EQ(resp.virtual_size(), kImageSize);
  EXPECT_EQ(resp.refcount(), 1u);
  EXPECT_EQ(MountsUnder(resp.mount_point()).size(), 1u);
  ExpectFiles(resp.mount_point(), files);

  pb::StatRequest stat_req;
  stat_req.set_id(resp.id());
  pb::StatResponse stat1;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->Stat(&ctx, stat_req, &stat1).ok());
  }
  EXPECT_GT(stat1.bytes_read(), 1u << 20);
  EXPECT_GT(stat1.bytes_fetched(), 0u);
  EXPECT_GT(stat1.cache_misses(), 0u);
  EXPECT_EQ(stat1.open_layers(), 1u);
  EXPECT_EQ(stat1.refcount(), 1u);
  EXPECT_EQ(stat1.read_errors(), 0u);
  EXPECT_EQ(stat1.attachment().layers_size(), 1);

  // Prefetching the whole layer reads every byte of its blob.
  {
    pb::PrefetchRequest pre;
    pre.set_id(resp.id());
    pre.add_layer_digests(blob.digest);
    pb::Range* r = pre.add_ranges();
    r->set_offset(0);
    r->set_length(kImageSize);
    pre.set_wait(true);
    pb::PrefetchResponse pre_resp;
    grpc::ClientContext ctx;
    grpc::Status s = stub->Prefetch(&ctx, pre, &pre_resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(pre_resp.bytes_requested(), blob.size + kImageSize);
    EXPECT_EQ(pre_resp.bytes_done(), blob.size + kImageSize);
    pb::PrefetchRequest bad = pre;
    bad.clear_ranges();
    bad.set_layer_digests(0, "sha256:" + std::string(64, '0'));
    grpc::ClientContext ctx2;
    EXPECT_EQ(stub->Prefetch(&ctx2, bad, &pre_resp).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  pb::StatResponse stat2;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->Stat(&ctx, stat_req, &stat2).ok());
  }
  EXPECT_GE(stat2.bytes_fetched(), stat1.bytes_fetched());
  EXPECT_GT(stat2.cache_hits() + stat2.cache_misses(), stat1.cache_hits() + stat1.cache_misses());

  // Attach again: same device, one more reference.
  pb::AttachResponse again;
  ASSERT_NO_FATAL_FAILURE(AttachBlob(*stub, blob, &again));
  EXPECT_EQ(again.id(), resp.id());
  EXPECT_EQ(again.device_path(), resp.device_path());
  EXPECT_EQ(again.mount_point(), resp.mount_point());
  EXPECT_EQ(again.refcount(), 2u);
  {
    pb::ListResponse list;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->List(&ctx, pb::ListRequest(), &list).ok());
    ASSERT_EQ(list.attachments_size(), 1);
    EXPECT_EQ(list.attachments(0).id(), resp.id());
    EXPECT_EQ(list.attachments(0).refcount(), 2u);
    EXPECT_EQ(list.attachments(0).layers(0).digest(), blob.digest);
  }

  pb::DetachRequest det;
  det.set_id(resp.id());
  pb::DetachResponse det_resp;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->Detach(&ctx, det, &det_resp).ok());
    EXPECT_EQ(det_resp.refcount(), 1u);
  }
  ExpectFiles(resp.mount_point(), files);  // still attached
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->Detach(&ctx, det, &det_resp).ok());
    EXPECT_EQ(det_resp.refcount(), 0u);
  }
  EXPECT_TRUE(MountsUnder(resp.mount_point()).empty());
  EXPECT_TRUE(Eventually([&] { return LoopsUnder(scratch_.path()).empty(); }));
  {
    grpc::ClientContext ctx;
    EXPECT_EQ(stub->Detach(&ctx, det, &det_resp).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::ClientContext ctx;
    EXPECT_EQ(stub->Stat(&ctx, stat_req, &stat2).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  EXPECT_EQ(daemon_->Stop(), 0) << daemon_->Log();
  EXPECT_TRUE(MountsUnder(scratch_.path() + "/").empty());
  EXPECT_NE(::access(daemon_->socket().c_str(), F_OK), 0);
}

// What a container read is recorded (GetTrace); published as a blob and named in a later
// Attach, it is fetched in the background right away, so that reading the same files fetches
// nothing more, while files outside the trace stay remote. A trace that cannot be fetched
// does not fail the attach.
TEST_F(BlockdDaemonTest, StartupTraceIsRecordedThenPrefetchedOnTheNextAttach) {
  const std::map<std::string, std::string> files = {{"etc/hello.txt", "hello\n"},
                                                    {"data/read.bin", RandomData(2 << 20, 3)},
                                                    {"data/unread.bin", RandomData(2 << 20, 4)}};
  std::string image;
  Blob blob;
  ASSERT_NO_FATAL_FAILURE(MakeImage("traced", files, &image, &blob));
  ASSERT_TRUE(daemon_->Start(Config()).ok()) << daemon_->Log();
  auto stub = daemon_->Connect();
  pb::AttachResponse resp;
  ASSERT_NO_FATAL_FAILURE(AttachBlob(*stub, blob, &resp));
  EXPECT_EQ(ReadWhole(resp.mount_point() + "/etc/hello.txt"), files.at("etc/hello.txt"));
  EXPECT_TRUE(ReadWhole(resp.mount_point() + "/data/read.bin") == files.at("data/read.bin"));

  Blob trace_blob;
  ASSERT_NO_FATAL_FAILURE(SaveAndPushTrace(*stub, resp.id(), &trace_blob));

  ASSERT_NO_FATAL_FAILURE(RestartCold());
  stub = daemon_->Connect();
  pb::AttachRequest req;
  AddLayer(&req, blob);
  req.mutable_startup_trace()->set_digest(trace_blob.digest);
  req.mutable_startup_trace()->set_size(trace_blob.size);
  {
    grpc::ClientContext ctx;
    grpc::Status s = stub->Attach(&ctx, req, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message() << "\n" << daemon_->Log();
  }
  ASSERT_TRUE(Eventually([&] { return absl::StrContains(daemon_->Log(), "prefetched in"); }))
      << daemon_->Log();
  const uint64_t before = BytesFetched(*stub, resp.id());
  EXPECT_GE(before, uint64_t{2} << 20);
  EXPECT_LT(before, blob.size - (uint64_t{1} << 20)) << "the unread file came too";
  // The traced file's bytes were read ahead into its page cache; the other file's were not.
  EXPECT_EQ(ResidentBytes(resp.mount_point() + "/data/read.bin"), uint64_t{2} << 20);
  EXPECT_LT(ResidentBytes(resp.mount_point() + "/data/unread.bin"), uint64_t{1} << 20);
  EXPECT_TRUE(ReadWhole(resp.mount_point() + "/data/read.bin") == files.at("data/read.bin"));
  EXPECT_EQ(ReadWhole(resp.mount_point() + "/etc/hello.txt"), files.at("etc/hello.txt"));
  EXPECT_EQ(BytesFetched(*stub, resp.id()), before) << "the traced reads were not local";
  EXPECT_TRUE(ReadWhole(resp.mount_point() + "/data/unread.bin") == files.at("data/unread.bin"));

  // A trace the registry does not have: logged, the attach works all the same.
  pb::AttachRequest missing = req;
  missing.set_id("no-trace");
  missing.mutable_startup_trace()->set_digest(Sha256Digest("no such trace"));
  pb::AttachResponse missing_resp;
  {
    grpc::ClientContext ctx;
    grpc::Status s = stub->Attach(&ctx, missing, &missing_resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  EXPECT_TRUE(Eventually([&] { return absl::StrContains(daemon_->Log(), "starting without it"); }))
      << daemon_->Log();
  EXPECT_EQ(ReadWhole(missing_resp.mount_point() + "/etc/hello.txt"), files.at("etc/hello.txt"));
  EXPECT_EQ(daemon_->Stop(), 0) << daemon_->Log();
}

// GetTrace names the layer bytes behind the trace (`stored`); a pack of them, named by the
// trace, fills the node cache in one GET on the next attach: the traced reads then fetch
// nothing, and no range of the layer is fetched but the few an open reads (its head and tail).
// A pack the registry lacks only costs the pack: the ranges are fetched as before.
TEST_F(BlockdDaemonTest, StartupPackFillsTheNodeCacheInOneGet) {
  std::map<std::string, std::string> files;
  Blob blob, trace_blob;
  std::unique_ptr<pb::Blockd::Stub> stub;
  pb::AttachResponse resp;
  ASSERT_NO_FATAL_FAILURE(RecordTracedImage("packed", 7, &files, &blob, &stub, &resp, &trace_blob));
  absl::StatusOr<StartupTrace> trace = ParseStartupTrace(ReadWhole(trace_blob.path));
  ASSERT_TRUE(trace.ok()) << trace.status();
  ASSERT_FALSE(trace->stored.empty());
  const std::string layer = ReadWhole(blob.path);
  std::string pack;
  for (const StoredRange& r : trace->stored) {
    EXPECT_EQ(r.blob, blob.digest);
    ASSERT_LE(r.range.offset + r.range.length, layer.size());
    pack += layer.substr(r.range.offset, r.range.length);
  }
  // The stored bytes of a 2 MiB file, compressed: more than nothing, less than the layer.
  EXPECT_GT(pack.size(), uint64_t{1} << 20);
  EXPECT_LT(pack.size(), blob.size - (uint64_t{1} << 20));
  const Blob pack_blob{Sha256Digest(pack), pack.size(), scratch_.Join("pack.bin")};
  std::ofstream(pack_blob.path, std::ios::binary) << pack;
  ASSERT_NO_FATAL_FAILURE(Push(pack_blob));

  // Attaches with `trace` (its pack set to `pack_ref`) as a new trace blob, cold; returns the
  // attachment's fetched bytes once the trace's prefetch is done.
  auto attach_with = [&](const StartupPackRef& pack_ref, const std::string& id) -> uint64_t {
    StartupTrace with_pack = *trace;
    with_pack.packs = {pack_ref};
    const std::string json = SerializeStartupTrace(with_pack);
    const Blob packed_trace{Sha256Digest(json), json.size(), scratch_.Join(id + ".json")};
    std::ofstream(packed_trace.path, std::ios::binary) << json;
    Push(packed_trace);
    const size_t done = Occurrences(daemon_->Log(), "prefetched in");
    RestartCold();
    stub = daemon_->Connect();
    pb::AttachRequest req;
    AddLayer(&req, blob);
    req.set_id(id);
    req.mutable_startup_trace()->set_digest(packed_trace.digest);
    req.mutable_startup_trace()->set_size(packed_trace.size);
    grpc::ClientContext ctx;
    grpc::Status s = stub->Attach(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message() << "\n" << daemon_->Log();
    EXPECT_TRUE(Eventually([&] { return Occurrences(daemon_->Log(), "prefetched in") > done; }))
        << daemon_->Log();
    return BytesFetched(*stub, resp.id());
  };

  const uint64_t fetched =
      attach_with(StartupPackRef{pack_blob.digest, pack_blob.size, trace->stored.size()}, "packed");
  EXPECT_TRUE(absl::StrContains(daemon_->Log(), absl::StrCat(pack.size(), " from packs")))
      << daemon_->Log();
  EXPECT_LT(fetched, uint64_t{1} << 20) << "the layer's stored ranges were fetched, not packed";
  EXPECT_TRUE(ReadWhole(resp.mount_point() + "/data/read.bin") == files.at("data/read.bin"));
  EXPECT_EQ(BytesFetched(*stub, resp.id()), fetched) << "the traced reads were not local";

  const uint64_t without = attach_with(
      StartupPackRef{Sha256Digest("no such pack"), pack.size(), trace->stored.size()}, "unpacked");
  EXPECT_TRUE(absl::StrContains(daemon_->Log(), "fetching its ranges instead")) << daemon_->Log();
  EXPECT_GE(without, uint64_t{1} << 20) << "the trace was not prefetched without its pack";
  EXPECT_TRUE(ReadWhole(resp.mount_point() + "/data/read.bin") == files.at("data/read.bin"));
  EXPECT_EQ(daemon_->Stop(), 0) << daemon_->Log();
}

// Warm (what the snapshotter calls when it pulls a traced image) fills the node cache with the
// trace's blocks without a device, so that a later attach reads them without fetching.
TEST_F(BlockdDaemonTest, WarmPrefetchesATraceWithoutADevice) {
  std::map<std::string, std::string> files;
  Blob blob, trace_blob;
  std::unique_ptr<pb::Blockd::Stub> stub;
  pb::AttachResponse resp;
  ASSERT_NO_FATAL_FAILURE(RecordTracedImage("warmed", 5, &files, &blob, &stub, &resp, &trace_blob));
  ASSERT_NO_FATAL_FAILURE(RestartCold());
  stub = daemon_->Connect();

  pb::WarmRequest warm;
  AddLayer(&warm, blob);
  warm.mutable_startup_trace()->set_digest(trace_blob.digest);
  warm.mutable_startup_trace()->set_size(trace_blob.size);
  pb::WarmResponse warm_resp;
  {
    grpc::ClientContext ctx;
    grpc::Status s = stub->Warm(&ctx, warm, &warm_resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  ASSERT_TRUE(Eventually([&] { return absl::StrContains(daemon_->Log(), "prefetched in"); }))
      << daemon_->Log();
  {
    pb::ListResponse list;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->List(&ctx, pb::ListRequest(), &list).ok());
    EXPECT_EQ(list.attachments_size(), 0) << "Warm attached a device";
  }
  ASSERT_NO_FATAL_FAILURE(AttachBlob(*stub, blob, &resp));
  EXPECT_TRUE(ReadWhole(resp.mount_point() + "/data/read.bin") == files.at("data/read.bin"));
  EXPECT_EQ(BytesFetched(*stub, resp.id()), 0u) << "the warmed blocks were fetched again";
  {
    pb::WarmRequest empty;
    pb::WarmResponse r;
    grpc::ClientContext ctx;
    EXPECT_EQ(stub->Warm(&ctx, empty, &r).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  EXPECT_EQ(daemon_->Stop(), 0) << daemon_->Log();
}

TEST_F(BlockdDaemonTest, TwoLayerStackOverwritesAndDeletesFilesAndSharesTheBase) {
  const std::map<std::string, std::string> base_files = {{"a", "version one of a\n"},
                                                         {"keep", RandomData(300'000, 3)},
                                                         {"gone", RandomData(50'000, 4)}};
  std::string base_image;
  Blob base;
  ASSERT_NO_FATAL_FAILURE(MakeImage("base", base_files, &base_image, &base));

  // Layer 2: the same file system changed with debugfs: a rewritten, gone removed, new added.
  const std::string upper_path = scratch_.Join("upper.img");
  fs::copy_file(scratch_.Join("base.img"), upper_path);
  const std::string new_a = RandomData(200'000, 5), new_file = "a new file\n";
  WriteFile(scratch_.Join("new_a"), new_a);
  WriteFile(scratch_.Join("new_file"), new_file);
  WriteFile(scratch_.Join("debugfs.cmd"),
            absl::StrCat("rm /a\nwrite ", scratch_.Join("new_a"), " a\nrm /gone\nwrite ",
                         scratch_.Join("new_file"), " new\n"));
  ASSERT_TRUE(testing::RunCommand({"debugfs", "-w", "-f", scratch_.Join("debugfs.cmd"), upper_path},
                                  scratch_.Join("debugfs.log"))
                  .ok())
      << ReadWhole(scratch_.Join("debugfs.log"));
  const std::string upper_image = ReadWhole(upper_path);
  Blob upper;
  ASSERT_NO_FATAL_FAILURE(
      MakeLayerBlob(scratch_.path(), "upper", upper_image, &base_image, &upper));
  ASSERT_NO_FATAL_FAILURE(Push(upper));
  ASSERT_LT(upper.size, base.size);  // a diff, not a copy

  ASSERT_TRUE(daemon_->Start(Config()).ok()) << daemon_->Log();
  auto stub = daemon_->Connect();

  // Both images attached at once, in parallel; they share the base layer.
  pb::AttachRequest two, one;
  AddLayer(&two, base);
  AddLayer(&two, upper);
  two.set_id("two-layers");
  AddLayer(&one, base);
  one.set_id("base-only");
  pb::AttachResponse two_resp, one_resp;
  grpc::Status two_status, one_status;
  {
    std::thread t([&] {
      grpc::ClientContext ctx;
      two_status = stub->Attach(&ctx, two, &two_resp);
    });
    grpc::ClientContext ctx;
    one_status = stub->Attach(&ctx, one, &one_resp);
    t.join();
  }
  ASSERT_TRUE(two_status.ok()) << two_status.error_message() << daemon_->Log();
  ASSERT_TRUE(one_status.ok()) << one_status.error_message() << daemon_->Log();
  EXPECT_NE(two_resp.device_path(), one_resp.device_path());

  ExpectFiles(two_resp.mount_point(),
              {{"a", new_a}, {"keep", base_files.at("keep")}, {"new", new_file}});
  EXPECT_FALSE(fs::exists(two_resp.mount_point() + "/gone"));
  ExpectFiles(one_resp.mount_point(), base_files);
  EXPECT_FALSE(fs::exists(one_resp.mount_point() + "/new"));
  {
    pb::StatRequest sr;
    sr.set_id("two-layers");
    pb::StatResponse stat;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->Stat(&ctx, sr, &stat).ok());
    EXPECT_EQ(stat.open_layers(), 2u);
  }

  // The same id with other layers is refused; so are bad requests, and they leave nothing.
  {
    pb::AttachResponse r;
    grpc::ClientContext ctx;
    pb::AttachRequest other = one;
    other.set_id("two-layers");
    EXPECT_EQ(stub->Attach(&ctx, other, &r).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  }
  {
    pb::AttachResponse r;
    grpc::ClientContext ctx;
    pb::AttachRequest bad = one;
    bad.set_id("bad-digest");
    bad.mutable_layers(0)->set_digest("sha256:1234");
    EXPECT_EQ(stub->Attach(&ctx, bad, &r).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    pb::AttachResponse r;
    grpc::ClientContext ctx;
    pb::AttachRequest bad = one;
    bad.set_id("bad-option");
    (*bad.mutable_options())["colour"] = "blue";
    EXPECT_EQ(stub->Attach(&ctx, bad, &r).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    pb::AttachResponse r;
    grpc::ClientContext ctx;
    pb::AttachRequest missing = one;
    missing.set_id("missing-blob");
    missing.mutable_layers(0)->set_digest(Sha256Digest("not pushed"));
    grpc::Status s = stub->Attach(&ctx, missing, &r);
    EXPECT_FALSE(s.ok());
    EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();
  }
  {
    pb::ListResponse list;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->List(&ctx, pb::ListRequest(), &list).ok());
    ASSERT_EQ(list.attachments_size(), 2);
    EXPECT_EQ(list.attachments(0).id(), "base-only");
    EXPECT_EQ(list.attachments(1).id(), "two-layers");
  }
  for (const char* id : {"two-layers", "base-only"}) {
    pb::DetachRequest det;
    det.set_id(id);
    pb::DetachResponse r;
    grpc::ClientContext ctx;
    EXPECT_TRUE(stub->Detach(&ctx, det, &r).ok()) << id;
  }
  EXPECT_TRUE(Eventually([&] { return LoopsUnder(scratch_.path()).empty(); }));
  EXPECT_EQ(daemon_->Stop(), 0) << daemon_->Log();
}

TEST_F(BlockdDaemonTest, RegistryGoneAfterAttachGivesEioNeverWrongBytes) {
  const std::string small = "small file read before the registry goes\n";
  const std::string big = RandomData(8 << 20, 6);  // incompressible: 8 MiB of the blob
  std::string image;
  Blob blob;
  ASSERT_NO_FATAL_FAILURE(MakeImage("eio", {{"small", small}, {"big", big}}, &image, &blob));
  ASSERT_TRUE(daemon_->Start(Config()).ok()) << daemon_->Log();
  auto stub = daemon_->Connect();
  pb::AttachResponse resp;
  ASSERT_NO_FATAL_FAILURE(AttachBlob(*stub, blob, &resp));
  EXPECT_EQ(ReadWhole(resp.mount_point() + "/small"), small);

  registry_.reset();  // killed: every fetch from now on fails

  int fd = ::open((resp.mount_point() + "/big").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  std::string buf(1 << 20, '\0');
  uint64_t off = 0;
  int err = 0;
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) {
      err = errno;
      break;
    }
    if (n == 0) break;
    // What does arrive is right.
    ASSERT_EQ(absl::string_view(buf.data(), static_cast<size_t>(n)),
              absl::string_view(big.data() + off, static_cast<size_t>(n)))
        << "at " << off;
    off += static_cast<uint64_t>(n);
  }
  ::close(fd);
  EXPECT_EQ(err, EIO) << "read " << off << " of " << big.size() << " bytes: " << std::strerror(err);
  EXPECT_LT(off, big.size());
  {
    pb::StatRequest sr;
    sr.set_id(resp.id());
    pb::StatResponse stat;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->Stat(&ctx, sr, &stat).ok());
    EXPECT_GT(stat.read_errors(), 0u);
  }
  {
    pb::DetachRequest det;
    det.set_id(resp.id());
    det.set_force(true);
    pb::DetachResponse r;
    grpc::ClientContext ctx;
    EXPECT_TRUE(stub->Detach(&ctx, det, &r).ok());
  }
  EXPECT_TRUE(Eventually([&] { return LoopsUnder(scratch_.path()).empty(); }));
  EXPECT_EQ(daemon_->Stop(), 0) << daemon_->Log();
}

TEST_F(BlockdDaemonTest, SigtermDetachesEverything) {
  std::string image;
  Blob blob;
  ASSERT_NO_FATAL_FAILURE(MakeImage("term", {{"f", "file\n"}}, &image, &blob));
  ASSERT_TRUE(daemon_->Start(Config()).ok()) << daemon_->Log();
  auto stub = daemon_->Connect();
  std::vector<std::string> mounts;
  for (const char* id : {"img-1", "img-2", "img-3"}) {
    pb::AttachResponse resp;
    ASSERT_NO_FATAL_FAILURE(AttachBlob(*stub, blob, &resp, id));
    EXPECT_EQ(ReadWhole(resp.mount_point() + "/f"), "file\n");
    mounts.push_back(resp.mount_point());
  }
  EXPECT_EQ(LoopsUnder(scratch_.path()).size(), 3u);
  EXPECT_EQ(daemon_->Stop(), 0) << daemon_->Log();
  EXPECT_TRUE(MountsUnder(scratch_.path() + "/").empty());
  EXPECT_TRUE(Eventually([&] { return LoopsUnder(scratch_.path()).empty(); }));
  EXPECT_NE(::access(daemon_->socket().c_str(), F_OK), 0);
}

}  // namespace
}  // namespace dadi::blockstore
