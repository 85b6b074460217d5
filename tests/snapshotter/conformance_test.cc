// Conformance of dadi-snapshotter with containerd's snapshots API and semantics, driven
// through its gRPC socket: the real binary runs in a scratch directory with its own root.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "dadi/blockd/v1/blockd.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/snapshotter/daemon.h"
#include "tests/support/scratch_dir.h"

namespace dadi::testing {
namespace {

namespace pb = ::containerd::services::snapshots::v1;
using ::testing::ElementsAre;
using ::testing::UnorderedElementsAreArray;
using Labels = std::map<std::string, std::string>;
using Mounts = google::protobuf::RepeatedPtrField<containerd::types::Mount>;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void WriteFile(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::trunc);
  out << data;
  ASSERT_TRUE(out.good()) << path;
}

std::vector<std::string> Options(const containerd::types::Mount& m) {
  return {m.options().begin(), m.options().end()};
}

class ConformanceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(scratch_.path().empty());
    daemon_ = std::make_unique<SnapshotterDaemon>(root(), scratch_.Join("run/snap.sock"),
                                                  scratch_.Join("daemon.log"));
    ASSERT_TRUE(daemon_->Start(DaemonArgs()).ok()) << daemon_->Log();
    stub_ = daemon_->Connect();
  }

  // Extra flags of the daemon. Without a blockd of the test's own, remote layers are off:
  // nothing may reach a blockd of the machine.
  virtual std::vector<std::string> DaemonArgs() { return {"--blockd-address", ""}; }

  void TearDown() override {
    mounter_.reset();  // unmount before the daemon and the directories go
    stub_.reset();
    // A clean stop, checked: under ASan/UBSan a fault or a leak in the daemon makes its exit
    // status non-zero.
    if (daemon_ && daemon_->running()) {
      absl::Status st = daemon_->Stop();
      EXPECT_TRUE(st.ok()) << st << "\n" << daemon_->Log();
    }
    daemon_.reset();
  }

  std::string root() const { return scratch_.Join("root"); }

  void Restart() {
    stub_.reset();
    ASSERT_TRUE(daemon_->Stop().ok()) << daemon_->Log();
    ASSERT_TRUE(daemon_->Start(DaemonArgs()).ok()) << daemon_->Log();
    stub_ = daemon_->Connect();
  }

  // A client context as containerd's proxy sends it: the namespace in the metadata.
  static void Init(grpc::ClientContext* ctx) {
    ctx->AddMetadata("containerd-namespace", "default");
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  }

  grpc::Status Prepare(const std::string& key, const std::string& parent, const Labels& labels = {},
                       Mounts* mounts = nullptr) {
    grpc::ClientContext ctx;
    Init(&ctx);
    pb::PrepareSnapshotRequest req;
    req.set_snapshotter("dadi");
    req.set_key(key);
    req.set_parent(parent);
    req.mutable_labels()->insert(labels.begin(), labels.end());
    pb::PrepareSnapshotResponse resp;
    grpc::Status st = stub_->Prepare(&ctx, req, &resp);
    if (mounts != nullptr) *mounts = resp.mounts();
    return st;
  }

  grpc::Status View(const std::string& key, const std::string& parent, Mounts* mounts = nullptr,
                    const Labels& labels = {}) {
    grpc::ClientContext ctx;
    Init(&ctx);
    pb::ViewSnapshotRequest req;
    req.set_key(key);
    req.set_parent(parent);
    req.mutable_labels()->insert(labels.begin(), labels.end());
    pb::ViewSnapshotResponse resp;
    grpc::Status st = stub_->View(&ctx, req, &resp);
    if (mounts != nullptr) *mounts = resp.mounts();
    return st;
  }

  grpc::Status GetMounts(const std::string& key, Mounts* mounts) {
    grpc::ClientContext ctx;
    Init(&ctx);
    pb::MountsRequest req;
    req.set_key(key);
    pb::MountsResponse resp;
    grpc::Status st = stub_->Mounts(&ctx, req, &resp);
    *mounts = resp.mounts();
    return st;
  }

  grpc::Status Commit(const std::string& name, const std::string& key, const Labels& labels = {}) {
    grpc::ClientContext ctx;
    Init(&ctx);
    pb::CommitSnapshotRequest req;
    req.set_name(name);
    req.set_key(key);
    req.mutable_labels()->insert(labels.begin(), labels.end());
    google::protobuf::Empty resp;
    return stub_->Commit(&ctx, req, &resp);
  }

  grpc::Status Remove(const std::string& key) {
    grpc::ClientContext ctx;
    Init(&ctx);
    pb::RemoveSnapshotRequest req;
    req.set_key(key);
    google::protobuf::Empty resp;
    return stub_->Remove(&ctx, req, &resp);
  }

  grpc::Status Stat(const std::string& key, pb::Info* info = nullptr) {
    grpc::ClientContext ctx;
    Init(&ctx);
    pb::StatSnapshotRequest req;
    req.set_key(key);
    pb::StatSnapshotResponse resp;
    grpc::Status st = stub_->Stat(&ctx, req, &resp);
    if (info != nullptr) *info = resp.info();
    return st;
  }

  grpc::Status Update(const pb::Info& info, const std::vector<std::string>& paths,
                      pb::Info* out = nullptr) {
    grpc::ClientContext ctx;
    Init(&ctx);
    pb::UpdateSnapshotRequest req;
    *req.mutable_info() = info;
    for (const auto& p : paths) req.mutable_update_mask()->add_paths(p);
    pb::UpdateSnapshotResponse resp;
    grpc::Status st = stub_->Update(&ctx, req, &resp);
    if (out != nullptr) *out = resp.info();
    return st;
  }

  grpc::Status List(const std::vector<std::string>& filters, std::vector<pb::Info>* out,
                    int* messages = nullptr) {
    grpc::ClientContext ctx;
    Init(&ctx);
    pb::ListSnapshotsRequest req;
    for (const auto& f : filters) req.add_filters(f);
    auto reader = stub_->List(&ctx, req);
    pb::ListSnapshotsResponse resp;
    out->clear();
    int n = 0;
    while (reader->Read(&resp)) {
      ++n;
      for (const auto& i : resp.info()) out->push_back(i);
    }
    if (messages != nullptr) *messages = n;
    return reader->Finish();
  }

  std::vector<std::string> ListNames(const std::vector<std::string>& filters) {
    std::vector<pb::Info> infos;
    grpc::Status st = List(filters, &infos);
    EXPECT_TRUE(st.ok()) << st.error_message();
    std::vector<std::string> names;
    for (const auto& i : infos) names.push_back(i.name());
    return names;
  }

  grpc::Status Usage(const std::string& key, pb::UsageResponse* usage) {
    grpc::ClientContext ctx;
    Init(&ctx);
    pb::UsageRequest req;
    req.set_key(key);
    return stub_->Usage(&ctx, req, usage);
  }

  grpc::Status Cleanup() {
    grpc::ClientContext ctx;
    Init(&ctx);
    pb::CleanupRequest req;
    google::protobuf::Empty resp;
    return stub_->Cleanup(&ctx, req, &resp);
  }

  // A fresh mount point in the scratch directory.
  std::string MountPoint() {
    const std::string dir = scratch_.Join(absl::StrCat("mnt/", next_mount_++));
    std::filesystem::create_directories(dir);
    return dir;
  }

  Mounter& mounter() {
    if (!mounter_) mounter_ = std::make_unique<Mounter>();
    return *mounter_;
  }

  // Prepares `key` on `parent`, mounts it, writes `files`, unmounts and commits as `name`:
  // what containerd does to unpack a layer.
  void Layer(const std::string& name, const std::string& parent,
             const std::map<std::string, std::string>& files, const Labels& labels = {}) {
    const std::string key = "extract-" + name;
    Mounts mounts;
    ASSERT_TRUE(Prepare(key, parent, {}, &mounts).ok()) << key;
    const std::string mp = MountPoint();
    ASSERT_TRUE(mounter().Mount(mounts, mp).ok());
    for (const auto& [path, data] : files) WriteFile(mp + "/" + path, data);
    ASSERT_TRUE(mounter().Unmount(mp).ok());
    grpc::Status st = Commit(name, key, labels);
    ASSERT_TRUE(st.ok()) << st.error_message();
  }

  ScratchDir scratch_{"dadi-snap-conf"};
  std::unique_ptr<SnapshotterDaemon> daemon_;
  std::unique_ptr<pb::Snapshots::Stub> stub_;
  std::unique_ptr<Mounter> mounter_;
  int next_mount_ = 0;
};

TEST_F(ConformanceTest, SocketAndRootArePrivate) {
  struct stat st;
  ASSERT_EQ(stat(daemon_->socket().c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(stat(scratch_.Join("run").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(stat(root().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
}

TEST_F(ConformanceTest, SigtermStopsCleanlyAndRemovesSocket) {
  ASSERT_TRUE(daemon_->Stop().ok()) << daemon_->Log();
  EXPECT_NE(access(daemon_->socket().c_str(), F_OK), 0);
  EXPECT_THAT(daemon_->Log(), ::testing::HasSubstr("shutting down"));
}

TEST_F(ConformanceTest, SecondDaemonOnSameRootIsRefused) {
  SnapshotterDaemon second(root(), scratch_.Join("run/second.sock"), scratch_.Join("second.log"));
  absl::Status st = second.Start();
  EXPECT_FALSE(st.ok());
  EXPECT_THAT(second.Log(), ::testing::HasSubstr("in use"));
}

TEST_F(ConformanceTest, LiveSocketOfAnotherServerIsNotTakenOver) {
  SnapshotterDaemon second(scratch_.Join("root2"), daemon_->socket(), scratch_.Join("second.log"));
  // Start() may see the first daemon's socket answer; the second one must then exit.
  if (second.Start().ok()) {
    auto status = second.WaitForExit();
    ASSERT_TRUE(status.ok()) << status.status();
    EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 1) << *status;
  }
  EXPECT_THAT(second.Log(), ::testing::HasSubstr("in use by a running server"));
  ASSERT_TRUE(Prepare("still-served", "").ok());  // the first daemon still owns its socket
}

TEST_F(ConformanceTest, StaleSocketIsReplaced) {
  daemon_->Kill();  // leaves its socket file behind
  ASSERT_EQ(access(daemon_->socket().c_str(), F_OK), 0);
  ASSERT_TRUE(daemon_->Start().ok()) << daemon_->Log();
  stub_ = daemon_->Connect();
  EXPECT_TRUE(Prepare("after-restart", "").ok());
}

TEST_F(ConformanceTest, PrepareCommitStatChain) {
  Layer("default/1/sha256:aaa", "", {{"a", "1"}}, {{"containerd.io/snapshot.ref", "aaa"}});
  Layer("default/2/sha256:bbb", "default/1/sha256:aaa", {{"b", "2"}});

  pb::Info info;
  ASSERT_TRUE(Stat("default/2/sha256:bbb", &info).ok());
  EXPECT_EQ(info.name(), "default/2/sha256:bbb");
  EXPECT_EQ(info.parent(), "default/1/sha256:aaa");
  EXPECT_EQ(info.kind(), pb::COMMITTED);
  EXPECT_GT(info.created_at().seconds(), 0);
  EXPECT_EQ(info.created_at().seconds(), info.updated_at().seconds());
  EXPECT_EQ(info.created_at().nanos(), info.updated_at().nanos());

  ASSERT_TRUE(Stat("default/1/sha256:aaa", &info).ok());
  EXPECT_EQ(info.parent(), "");
  EXPECT_THAT(info.labels(), ::testing::SizeIs(1));
  EXPECT_EQ(info.labels().at("containerd.io/snapshot.ref"), "aaa");

  // Commit removes the active key.
  EXPECT_EQ(Stat("extract-default/2/sha256:bbb").error_code(), grpc::StatusCode::NOT_FOUND);

  // An active snapshot: kind, parent, labels given at Prepare.
  ASSERT_TRUE(Prepare("container", "default/2/sha256:bbb", {{"x", "y"}}).ok());
  ASSERT_TRUE(Stat("container", &info).ok());
  EXPECT_EQ(info.kind(), pb::ACTIVE);
  EXPECT_EQ(info.parent(), "default/2/sha256:bbb");
  EXPECT_EQ(info.labels().at("x"), "y");
  ASSERT_TRUE(View("view", "default/2/sha256:bbb").ok());
  ASSERT_TRUE(Stat("view", &info).ok());
  EXPECT_EQ(info.kind(), pb::VIEW);
}

TEST_F(ConformanceTest, CommitReplacesLabelsAndTimes) {
  ASSERT_TRUE(Prepare("k", "", {{"old", "1"}}).ok());
  pb::Info before;
  ASSERT_TRUE(Stat("k", &before).ok());
  ASSERT_TRUE(Commit("n", "k", {{"new", "2"}}).ok());
  pb::Info after;
  ASSERT_TRUE(Stat("n", &after).ok());
  EXPECT_EQ(after.labels().count("old"), 0u);
  EXPECT_EQ(after.labels().at("new"), "2");
  EXPECT_GE(after.created_at().seconds(), before.created_at().seconds());
}

TEST_F(ConformanceTest, ErrorCodes) {
  using grpc::StatusCode;
  ASSERT_TRUE(Prepare("active", "").ok());
  ASSERT_TRUE(View("view", "").ok());
  ASSERT_TRUE(Prepare("tmp", "").ok());
  ASSERT_TRUE(Commit("committed", "tmp").ok());

  // Keys and names share one namespace.
  EXPECT_EQ(Prepare("active", "").error_code(), StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(Prepare("committed", "").error_code(), StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(View("view", "").error_code(), StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(View("active", "committed").error_code(), StatusCode::ALREADY_EXISTS);

  // Parents: missing, or not committed.
  EXPECT_EQ(Prepare("x", "missing").error_code(), StatusCode::NOT_FOUND);
  EXPECT_EQ(View("x", "missing").error_code(), StatusCode::NOT_FOUND);
  EXPECT_EQ(Prepare("x", "active").error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Prepare("x", "view").error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(View("x", "active").error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Stat("x").error_code(), StatusCode::NOT_FOUND);  // failed calls leave nothing

  // Commit.
  EXPECT_EQ(Commit("c2", "view").error_code(), StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(Commit("c2", "committed").error_code(), StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(Commit("c2", "missing").error_code(), StatusCode::NOT_FOUND);
  EXPECT_EQ(Commit("committed", "active").error_code(), StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(Commit("view", "active").error_code(), StatusCode::ALREADY_EXISTS);
  pb::Info info;
  ASSERT_TRUE(Stat("active", &info).ok());  // still active after the failed commits
  EXPECT_EQ(info.kind(), pb::ACTIVE);

  // Remove.
  ASSERT_TRUE(Prepare("child", "committed").ok());
  EXPECT_EQ(Remove("committed").error_code(), StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(Remove("missing").error_code(), StatusCode::NOT_FOUND);

  // Others.
  Mounts mounts;
  EXPECT_EQ(GetMounts("missing", &mounts).error_code(), StatusCode::NOT_FOUND);
  EXPECT_EQ(GetMounts("committed", &mounts).error_code(), StatusCode::FAILED_PRECONDITION);
  pb::UsageResponse usage;
  EXPECT_EQ(Usage("missing", &usage).error_code(), StatusCode::NOT_FOUND);
  pb::Info missing;
  missing.set_name("missing");
  EXPECT_EQ(Update(missing, {}).error_code(), StatusCode::NOT_FOUND);
  EXPECT_EQ(Prepare("", "").error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Commit("", "active").error_code(), StatusCode::INVALID_ARGUMENT);
}

TEST_F(ConformanceTest, LabelSizeLimit) {
  const std::string key(96, 'k');
  Labels at_limit = {{key, std::string(4096 - key.size(), 'v')}};
  Labels over = {{key, std::string(4097 - key.size(), 'v')}};
  EXPECT_TRUE(Prepare("a", "", at_limit).ok());
  EXPECT_EQ(Prepare("b", "", over).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(View("b", "", nullptr, over).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Stat("b").error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Commit("c", "a", over).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  ASSERT_TRUE(Commit("c", "a", at_limit).ok());
  pb::Info info;
  info.set_name("c");
  (*info.mutable_labels())["big"] = std::string(4094, 'v');
  EXPECT_EQ(Update(info, {"labels.big"}).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  ASSERT_TRUE(Stat("c", &info).ok());
  EXPECT_EQ(info.labels().count("big"), 0u);
}

TEST_F(ConformanceTest, MountShapes) {
  Mounts active0, view0, l1, l2, view1, view2, active2;
  ASSERT_TRUE(Prepare("a0", "", {}, &active0).ok());
  ASSERT_EQ(active0.size(), 1);
  EXPECT_EQ(active0[0].type(), "bind");
  EXPECT_THAT(Options(active0[0]), ElementsAre("rw", "rbind"));
  EXPECT_TRUE(absl::StartsWith(active0[0].source(), root() + "/"));
  const std::string fs1 = active0[0].source();
  ASSERT_TRUE(Commit("l1", "a0").ok());

  ASSERT_TRUE(View("v0", "", &view0).ok());
  ASSERT_EQ(view0.size(), 1);
  EXPECT_EQ(view0[0].type(), "bind");
  EXPECT_THAT(Options(view0[0]), ElementsAre("ro", "rbind"));

  // A view of one layer is that layer's directory, read-only.
  ASSERT_TRUE(View("v1", "l1", &view1).ok());
  ASSERT_EQ(view1.size(), 1);
  EXPECT_EQ(view1[0].type(), "bind");
  EXPECT_EQ(view1[0].source(), fs1);
  EXPECT_THAT(Options(view1[0]), ElementsAre("ro", "rbind"));

  Mounts a1;
  ASSERT_TRUE(Prepare("a1", "l1", {}, &a1).ok());
  ASSERT_EQ(a1.size(), 1);
  EXPECT_EQ(a1[0].type(), "overlay");
  EXPECT_EQ(a1[0].source(), "overlay");
  const std::vector<std::string> a1_opts = Options(a1[0]);
  ASSERT_EQ(a1_opts.size(), 3u);
  EXPECT_TRUE(absl::StartsWith(a1_opts[0], "workdir=")) << a1_opts[0];
  EXPECT_TRUE(absl::StartsWith(a1_opts[1], "upperdir=")) << a1_opts[1];
  EXPECT_EQ(a1_opts[2], "lowerdir=" + fs1);
  const std::string fs2 = a1_opts[1].substr(9);
  ASSERT_TRUE(Commit("l2", "a1").ok());

  // Views of two or more layers: overlay of lower dirs only, nearest first.
  ASSERT_TRUE(View("v2", "l2", &view2).ok());
  ASSERT_EQ(view2.size(), 1);
  EXPECT_EQ(view2[0].type(), "overlay");
  EXPECT_THAT(Options(view2[0]), ElementsAre("lowerdir=" + fs2 + ":" + fs1));

  ASSERT_TRUE(Prepare("a2", "l2", {}, &active2).ok());
  const std::vector<std::string> a2_opts = Options(active2[0]);
  ASSERT_EQ(a2_opts.size(), 3u);
  EXPECT_EQ(a2_opts[2], "lowerdir=" + fs2 + ":" + fs1);

  // Mounts returns what Prepare and View returned.
  Mounts again;
  ASSERT_TRUE(GetMounts("a2", &again).ok());
  ASSERT_EQ(again.size(), 1);
  EXPECT_EQ(again[0].SerializeAsString(), active2[0].SerializeAsString());
  ASSERT_TRUE(GetMounts("v2", &again).ok());
  EXPECT_EQ(again[0].SerializeAsString(), view2[0].SerializeAsString());
}

TEST_F(ConformanceTest, ViewsAreReadOnly) {
  Layer("l1", "", {{"one", "1"}});
  Layer("l2", "l1", {{"two", "2"}});
  Mounts v0, v1, v2;
  ASSERT_TRUE(View("v0", "", &v0).ok());
  ASSERT_TRUE(View("v1", "l1", &v1).ok());
  ASSERT_TRUE(View("v2", "l2", &v2).ok());
  for (const auto& [name, mounts] : {std::pair{"v0", v0}, {"v1", v1}, {"v2", v2}}) {
    const std::string mp = MountPoint();
    ASSERT_TRUE(mounter().Mount(mounts, mp).ok()) << name;
    const int fd = ::open((mp + "/new-file").c_str(), O_WRONLY | O_CREAT, 0644);
    EXPECT_LT(fd, 0) << name << " is writable";
    EXPECT_EQ(errno, EROFS) << name;
    if (fd >= 0) ::close(fd);
    ASSERT_TRUE(mounter().Unmount(mp).ok());
  }
  // And they show their layers.
  const std::string mp = MountPoint();
  ASSERT_TRUE(mounter().Mount(v2, mp).ok());
  EXPECT_EQ(ReadFile(mp + "/one"), "1");
  EXPECT_EQ(ReadFile(mp + "/two"), "2");
}

TEST_F(ConformanceTest, ChainOf130LayersMountsAndReads) {
  constexpr int kLayers = 130;
  std::string parent;
  for (int i = 0; i < kLayers; ++i) {
    const std::string name = absl::StrCat("default/", i, "/sha256:layer", i);
    ASSERT_NO_FATAL_FAILURE(Layer(
        name, parent, {{absl::StrCat("file-", i), absl::StrCat(i)}, {"top", absl::StrCat(i)}}));
    parent = name;
  }
  // A read-only view of the whole chain: every layer's file, the top layer's "top".
  Mounts view;
  ASSERT_TRUE(View("view", parent, &view).ok());
  ASSERT_EQ(view.size(), 1);
  ASSERT_EQ(view[0].type(), "overlay");
  EXPECT_GT(view[0].options(0).size(), static_cast<size_t>(sysconf(_SC_PAGESIZE)))
      << "the chain should need lowerdir compaction by the client";
  std::string mp = MountPoint();
  absl::Status st = mounter().Mount(view, mp);
  ASSERT_TRUE(st.ok()) << st;
  for (int i = 0; i < kLayers; ++i) {
    EXPECT_EQ(ReadFile(absl::StrCat(mp, "/file-", i)), absl::StrCat(i)) << i;
  }
  EXPECT_EQ(ReadFile(mp + "/top"), absl::StrCat(kLayers - 1));
  // A container on top of the chain: writable, writes land in its own upper dir.
  Mounts rw;
  ASSERT_TRUE(Prepare("container", parent, {}, &rw).ok());
  mp = MountPoint();
  st = mounter().Mount(rw, mp);
  ASSERT_TRUE(st.ok()) << st;
  WriteFile(mp + "/top", "container");
  EXPECT_EQ(ReadFile(mp + "/top"), "container");
  EXPECT_EQ(ReadFile(mp + "/file-0"), "0");
  ASSERT_TRUE(mounter().Unmount(mp).ok());
  pb::UsageResponse usage;
  ASSERT_TRUE(Usage("container", &usage).ok());
  EXPECT_EQ(usage.inodes(), 2);  // its fs dir and the copied-up "top"
}

TEST_F(ConformanceTest, UsageCountsOwnDirectoryOnly) {
  Mounts mounts;
  ASSERT_TRUE(Prepare("a", "", {}, &mounts).ok());
  const std::string fs = mounts[0].source();
  std::filesystem::create_directory(fs + "/dir");
  WriteFile(fs + "/dir/data", std::string(100000, 'x'));
  WriteFile(fs + "/small", "y");
  ASSERT_EQ(::link((fs + "/small").c_str(), (fs + "/dir/hardlink").c_str()), 0);
  int64_t expected_size = 0;
  for (const char* p : {"", "/dir", "/dir/data", "/small"}) {
    struct stat st;
    ASSERT_EQ(lstat((fs + p).c_str(), &st), 0);
    expected_size += st.st_blocks * 512;
  }
  pb::UsageResponse usage;
  ASSERT_TRUE(Usage("a", &usage).ok());
  EXPECT_EQ(usage.inodes(), 4);  // fs, dir, data, small (= hardlink)
  EXPECT_EQ(usage.size(), expected_size);
  EXPECT_GE(usage.size(), 100000);

  ASSERT_TRUE(Commit("c", "a").ok());
  pb::UsageResponse committed;
  ASSERT_TRUE(Usage("c", &committed).ok());
  EXPECT_EQ(committed.inodes(), 4);
  EXPECT_EQ(committed.size(), expected_size);

  // A child counts none of its parent's files.
  Mounts child;
  ASSERT_TRUE(Prepare("child", "c", {}, &child).ok());
  pb::UsageResponse child_usage;
  ASSERT_TRUE(Usage("child", &child_usage).ok());
  EXPECT_EQ(child_usage.inodes(), 1);
  EXPECT_LT(child_usage.size(), 100000);
}

TEST_F(ConformanceTest, UpdateWithFieldMasks) {
  ASSERT_TRUE(Prepare("k", "", {}).ok());
  ASSERT_TRUE(Commit("c", "k", {{"a", "1"}, {"b", "2"}}).ok());
  pb::Info orig;
  ASSERT_TRUE(Stat("c", &orig).ok());

  // labels.<key>: set one, leave the others.
  pb::Info req;
  req.set_name("c");
  (*req.mutable_labels())["a"] = "10";
  (*req.mutable_labels())["z"] = "ignored: not in the mask";
  pb::Info out;
  ASSERT_TRUE(Update(req, {"labels.a"}, &out).ok());
  EXPECT_THAT(out.labels(), ::testing::SizeIs(2));
  EXPECT_EQ(out.labels().at("a"), "10");
  EXPECT_EQ(out.labels().at("b"), "2");
  EXPECT_EQ(out.created_at().SerializeAsString(), orig.created_at().SerializeAsString());
  const auto ns = [](const google::protobuf::Timestamp& t) {
    return t.seconds() * 1000000000 + t.nanos();
  };
  EXPECT_GT(ns(out.updated_at()), ns(orig.updated_at()));
  const int64_t first_update = ns(out.updated_at());

  // Keys with dots and slashes, as containerd's own labels have.
  req.Clear();
  req.set_name("c");
  (*req.mutable_labels())["containerd.io/gc.root"] = "2026-01-01T00:00:00Z";
  ASSERT_TRUE(Update(req, {"labels.containerd.io/gc.root"}, &out).ok());
  EXPECT_EQ(out.labels().at("containerd.io/gc.root"), "2026-01-01T00:00:00Z");
  req.clear_labels();
  ASSERT_TRUE(Update(req, {"labels.containerd.io/gc.root"}, &out).ok());
  EXPECT_EQ(out.labels().count("containerd.io/gc.root"), 0u);
  const int64_t dotted_update = ns(out.updated_at());
  EXPECT_GT(dotted_update, first_update);

  // labels.<key> absent from info: deleted.
  req.Clear();
  req.set_name("c");
  ASSERT_TRUE(Update(req, {"labels.b"}, &out).ok());
  EXPECT_THAT(out.labels(), ::testing::SizeIs(1));
  EXPECT_EQ(out.labels().count("b"), 0u);
  EXPECT_GT(ns(out.updated_at()), dotted_update);

  // labels: replace all.
  (*req.mutable_labels())["only"] = "x";
  ASSERT_TRUE(Update(req, {"labels"}, &out).ok());
  EXPECT_THAT(out.labels(), ::testing::SizeIs(1));
  EXPECT_EQ(out.labels().at("only"), "x");

  // No mask: all mutable fields, i.e. labels; immutable fields in info are ignored.
  req.Clear();
  req.set_name("c");
  req.set_parent("something");
  req.set_kind(pb::ACTIVE);
  (*req.mutable_labels())["m"] = "1";
  ASSERT_TRUE(Update(req, {}, &out).ok());
  pb::Info stat;
  ASSERT_TRUE(Stat("c", &stat).ok());
  EXPECT_EQ(stat.kind(), pb::COMMITTED);
  EXPECT_EQ(stat.parent(), "");
  EXPECT_THAT(stat.labels(), ::testing::SizeIs(1));
  EXPECT_EQ(stat.labels().at("m"), "1");
  EXPECT_EQ(stat.updated_at().SerializeAsString(), out.updated_at().SerializeAsString());

  // Immutable fields in the mask.
  for (const char* path : {"parent", "name", "kind", "created_at", "updated_at", "bogus"}) {
    EXPECT_EQ(Update(req, {path}).error_code(), grpc::StatusCode::INVALID_ARGUMENT) << path;
  }
  ASSERT_TRUE(Stat("c", &stat).ok());
  EXPECT_EQ(stat.labels().at("m"), "1");

  // Active snapshots and views take updates too.
  ASSERT_TRUE(Prepare("act", "c").ok());
  req.set_name("act");
  ASSERT_TRUE(Update(req, {"labels.m"}, &out).ok());
  EXPECT_EQ(out.kind(), pb::ACTIVE);
  EXPECT_EQ(out.parent(), "c");
  EXPECT_EQ(out.labels().at("m"), "1");
}

TEST_F(ConformanceTest, ListFilters) {
  Layer("base", "", {}, {{"containerd.io/snapshot.ref", "sha256:base"}, {"tier", "gold"}});
  Layer("mid", "base", {}, {{"containerd.io/snapshot.ref", "sha256:mid"}});
  ASSERT_TRUE(Prepare("work", "mid", {{"tier", "silver"}}).ok());
  ASSERT_TRUE(View("look", "base", nullptr, {{"a.b", "dotted"}}).ok());

  EXPECT_THAT(ListNames({}), UnorderedElementsAreArray({"base", "mid", "work", "look"}));
  EXPECT_THAT(ListNames({"name==mid"}), ElementsAre("mid"));
  EXPECT_THAT(ListNames({"parent==base"}), UnorderedElementsAreArray({"mid", "look"}));
  EXPECT_THAT(ListNames({"parent==\"\""}), ElementsAre("base"));
  EXPECT_THAT(ListNames({"kind==committed"}), UnorderedElementsAreArray({"base", "mid"}));
  EXPECT_THAT(ListNames({"kind==active"}), ElementsAre("work"));
  EXPECT_THAT(ListNames({"kind==view"}), ElementsAre("look"));
  EXPECT_THAT(ListNames({"kind!=committed"}), UnorderedElementsAreArray({"work", "look"}));
  EXPECT_THAT(ListNames({"labels.\"containerd.io/snapshot.ref\"==sha256:mid"}), ElementsAre("mid"));
  EXPECT_THAT(ListNames({"labels.\"containerd.io/snapshot.ref\""}),
              UnorderedElementsAreArray({"base", "mid"}));
  EXPECT_THAT(ListNames({"labels.\"containerd.io/snapshot.ref\"~=^sha256:b"}), ElementsAre("base"));
  EXPECT_THAT(ListNames({"labels.tier"}), UnorderedElementsAreArray({"base", "work"}));
  EXPECT_THAT(ListNames({"labels.tier!=gold"}), UnorderedElementsAreArray({"mid", "work", "look"}));
  EXPECT_THAT(ListNames({"labels.a.b==dotted"}), ElementsAre("look"));
  EXPECT_THAT(ListNames({"name~=^(base|mid)$"}), UnorderedElementsAreArray({"base", "mid"}));
  EXPECT_THAT(ListNames({"name~=i"}), UnorderedElementsAreArray({"mid"}));
  // Comma: AND. Several strings: OR.
  EXPECT_THAT(ListNames({"kind==committed,labels.tier==gold"}), ElementsAre("base"));
  EXPECT_THAT(ListNames({"name==work", "name==look"}), UnorderedElementsAreArray({"work", "look"}));
  EXPECT_THAT(ListNames({"name==nothing"}), ::testing::IsEmpty());

  std::vector<pb::Info> infos;
  for (const char* bad : {"name==", "==x", "name=x", "name==a,", "name~=(", "labels.\"open"}) {
    EXPECT_EQ(List({bad}, &infos).error_code(), grpc::StatusCode::INVALID_ARGUMENT) << bad;
  }
}

TEST_F(ConformanceTest, ListStreamsManySnapshotsInSeveralMessages) {
  // 300 snapshots with 4 KiB of labels each: more than the server puts in one message.
  constexpr int kCount = 300;
  for (int i = 0; i < kCount; ++i) {
    ASSERT_TRUE(Prepare(absl::StrCat("s", i), "", {{"pad", std::string(4090, 'p')}}).ok());
  }
  std::vector<pb::Info> infos;
  int messages = 0;
  ASSERT_TRUE(List({}, &infos, &messages).ok());
  EXPECT_EQ(infos.size(), static_cast<size_t>(kCount));
  EXPECT_GT(messages, 1);
  std::set<std::string> names;
  for (const auto& i : infos) names.insert(i.name());
  EXPECT_EQ(names.size(), static_cast<size_t>(kCount));
}

TEST_F(ConformanceTest, RemoveDeletesDirectoriesAndCleanupSweepsStrays) {
  Mounts mounts;
  ASSERT_TRUE(Prepare("a", "", {}, &mounts).ok());
  const std::string fs = mounts[0].source();
  WriteFile(fs + "/f", "x");
  ASSERT_TRUE(Commit("c", "a").ok());
  ASSERT_TRUE(Prepare("leaf", "c").ok());
  ASSERT_TRUE(Remove("leaf").ok());
  EXPECT_EQ(Stat("leaf").error_code(), grpc::StatusCode::NOT_FOUND);
  ASSERT_TRUE(Remove("c").ok());  // no children any more
  EXPECT_FALSE(std::filesystem::exists(fs));

  ASSERT_TRUE(Prepare("kept", "", {}, &mounts).ok());
  const std::string kept = mounts[0].source();
  const std::string snapshots = root() + "/snapshots";
  std::filesystem::create_directories(snapshots + "/999999/fs");
  std::filesystem::create_directories(snapshots + "/junk");
  ASSERT_TRUE(Cleanup().ok());
  EXPECT_FALSE(std::filesystem::exists(snapshots + "/999999"));
  EXPECT_FALSE(std::filesystem::exists(snapshots + "/junk"));
  EXPECT_TRUE(std::filesystem::exists(kept));
  ASSERT_TRUE(Stat("kept").ok());
}

TEST_F(ConformanceTest, ConcurrentPrepares) {
  Layer("base", "", {{"f", "base"}});
  constexpr int kThreads = 8, kPerThread = 20;
  std::atomic<int> failures{0};
  std::mutex mu;
  std::set<std::string> sources;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto stub = daemon_->Connect();
      for (int i = 0; i < kPerThread; ++i) {
        const std::string key = absl::StrCat("t", t, "-", i);
        grpc::ClientContext ctx;
        Init(&ctx);
        pb::PrepareSnapshotRequest req;
        req.set_key(key);
        req.set_parent("base");
        pb::PrepareSnapshotResponse resp;
        if (!stub->Prepare(&ctx, req, &resp).ok() || resp.mounts_size() != 1) {
          failures++;
          continue;
        }
        {
          std::lock_guard lock(mu);
          sources.insert(resp.mounts(0).options(1));  // upperdir
        }
        grpc::ClientContext cctx;
        Init(&cctx);
        pb::CommitSnapshotRequest commit;
        commit.set_key(key);
        commit.set_name("committed-" + key);
        google::protobuf::Empty empty;
        if (!stub->Commit(&cctx, commit, &empty).ok()) failures++;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(sources.size(), static_cast<size_t>(kThreads * kPerThread));
  EXPECT_EQ(ListNames({"kind==committed"}).size(), static_cast<size_t>(kThreads * kPerThread + 1));

  // Racing on one key: exactly one wins, the others get ALREADY_EXISTS.
  std::atomic<int> ok{0}, exists{0}, other{0};
  threads.clear();
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      auto stub = daemon_->Connect();
      grpc::ClientContext ctx;
      Init(&ctx);
      pb::PrepareSnapshotRequest req;
      req.set_key("contended");
      req.set_parent("base");
      pb::PrepareSnapshotResponse resp;
      grpc::Status st = stub->Prepare(&ctx, req, &resp);
      if (st.ok()) {
        ok++;
      } else if (st.error_code() == grpc::StatusCode::ALREADY_EXISTS) {
        exists++;
      } else {
        other++;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok.load(), 1);
  EXPECT_EQ(exists.load(), kThreads - 1);
  EXPECT_EQ(other.load(), 0);
  // No directory was left behind by the losers.
  size_t dirs = 0;
  for ([[maybe_unused]] const auto& e :
       std::filesystem::directory_iterator(root() + "/snapshots")) {
    ++dirs;
  }
  EXPECT_EQ(dirs, static_cast<size_t>(kThreads * kPerThread + 2));
  EXPECT_TRUE(std::filesystem::is_empty(root() + "/staging"));
}

TEST_F(ConformanceTest, PersistsAcrossRestart) {
  Layer("l1", "", {{"f", "1"}}, {{"containerd.io/snapshot.ref", "one"}});
  Mounts mounts;
  ASSERT_TRUE(Prepare("active", "l1", {{"x", "y"}}, &mounts).ok());
  ASSERT_TRUE(View("view", "l1").ok());
  std::vector<pb::Info> before;
  ASSERT_TRUE(List({}, &before).ok());

  ASSERT_NO_FATAL_FAILURE(Restart());
  std::vector<pb::Info> after;
  ASSERT_TRUE(List({}, &after).ok());
  ASSERT_EQ(after.size(), before.size());
  for (size_t i = 0; i < after.size(); ++i) {
    EXPECT_EQ(after[i].SerializeAsString(), before[i].SerializeAsString()) << after[i].name();
  }
  Mounts again;
  ASSERT_TRUE(GetMounts("active", &again).ok());
  EXPECT_EQ(again[0].SerializeAsString(), mounts[0].SerializeAsString());
  ASSERT_TRUE(Commit("l2", "active").ok());
  Mounts view;
  ASSERT_TRUE(View("v2", "l2", &view).ok());
  const std::string mp = MountPoint();
  ASSERT_TRUE(mounter().Mount(view, mp).ok());
  EXPECT_EQ(ReadFile(mp + "/f"), "1");
}

TEST_F(ConformanceTest, StartupReconcilesStraysAndMissingDirectories) {
  Layer("l1", "", {});
  Layer("l2", "l1", {});
  Layer("other", "", {});
  Mounts m1, m2;
  ASSERT_TRUE(View("v1", "l1", &m1).ok());  // bind of l1's fs dir
  ASSERT_TRUE(Prepare("c2", "l2", {}, &m2).ok());
  stub_.reset();
  ASSERT_TRUE(daemon_->Stop().ok());

  // l1's directory vanishes; a stray directory and a staging leftover appear.
  const std::string l1_dir = std::filesystem::path(m1[0].source()).parent_path();
  std::filesystem::remove_all(l1_dir);
  std::filesystem::create_directories(root() + "/snapshots/424242/fs");
  std::filesystem::create_directories(root() + "/staging/new-abcdef/fs");

  ASSERT_TRUE(daemon_->Start().ok()) << daemon_->Log();
  stub_ = daemon_->Connect();
  // l1 is dropped with everything above it; "other" is untouched.
  EXPECT_THAT(ListNames({}), ElementsAre("other"));
  EXPECT_FALSE(std::filesystem::exists(root() + "/snapshots/424242"));
  EXPECT_TRUE(std::filesystem::is_empty(root() + "/staging"));
  size_t dirs = 0;
  for ([[maybe_unused]] const auto& e :
       std::filesystem::directory_iterator(root() + "/snapshots")) {
    ++dirs;
  }
  EXPECT_EQ(dirs, 1u);
  EXPECT_THAT(daemon_->Log(), ::testing::HasSubstr("dropped snapshot \"l1\""));
}

// kill -9 at a random moment of a stream of Prepare/Commit/Remove calls: every commit that
// returned OK survives, nothing is half-present.
TEST_F(ConformanceTest, KillDuringCommitsLosesNothingCommitted) {
  std::mt19937 rng(std::random_device{}());
  for (int round = 0; round < 3; ++round) {
    std::atomic<bool> stop{false};
    std::mutex mu;
    std::vector<std::string> committed;  // names whose Commit returned OK
    std::thread writer([&] {
      auto stub = daemon_->Connect();
      std::string parent;
      for (int i = 0; !stop; ++i) {
        const std::string key = absl::StrCat("r", round, "-active-", i);
        const std::string name = absl::StrCat("r", round, "-layer-", i);
        grpc::ClientContext pctx;
        Init(&pctx);
        pb::PrepareSnapshotRequest prep;
        prep.set_key(key);
        prep.set_parent(parent);
        pb::PrepareSnapshotResponse presp;
        if (!stub->Prepare(&pctx, prep, &presp).ok()) break;
        // A file in the layer, written directly to the upper dir.
        const auto& m = presp.mounts(0);
        const std::string upper =
            m.type() == "bind" ? m.source() : std::string(m.options(1)).substr(9);
        std::ofstream(upper + "/file") << name;
        grpc::ClientContext cctx;
        Init(&cctx);
        pb::CommitSnapshotRequest commit;
        commit.set_key(key);
        commit.set_name(name);
        (*commit.mutable_labels())["containerd.io/snapshot.ref"] = name;
        google::protobuf::Empty empty;
        if (!stub->Commit(&cctx, commit, &empty).ok()) break;
        {
          std::lock_guard lock(mu);
          committed.push_back(name);
        }
        parent = name;
      }
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(20 + rng() % 300));
    daemon_->Kill();
    stop = true;
    writer.join();

    ASSERT_TRUE(daemon_->Start().ok()) << daemon_->Log();
    stub_ = daemon_->Connect();
    std::vector<pb::Info> infos;
    ASSERT_TRUE(List({}, &infos).ok());
    std::map<std::string, pb::Info> by_name;
    for (const auto& i : infos) by_name[i.name()] = i;
    for (const std::string& name : committed) {
      ASSERT_EQ(by_name.count(name), 1u)
          << name << " was committed but is gone (round " << round << ")";
      EXPECT_EQ(by_name[name].kind(), pb::COMMITTED);
      EXPECT_EQ(by_name[name].labels().at("containerd.io/snapshot.ref"), name);
    }
    // Nothing half-present: one directory per snapshot, staging empty, every active
    // snapshot's upper dir exists, every committed layer still has its file.
    size_t dirs = 0;
    for ([[maybe_unused]] const auto& e :
         std::filesystem::directory_iterator(root() + "/snapshots")) {
      ++dirs;
    }
    EXPECT_EQ(dirs, infos.size());
    EXPECT_TRUE(std::filesystem::is_empty(root() + "/staging"));
    for (const auto& i : infos) {
      if (i.kind() == pb::ACTIVE) {
        Mounts m;
        ASSERT_TRUE(GetMounts(i.name(), &m).ok());
        const std::string upper =
            m[0].type() == "bind" ? m[0].source() : std::string(m[0].options(1)).substr(9);
        EXPECT_TRUE(std::filesystem::is_directory(upper)) << i.name();
      } else if (i.kind() == pb::COMMITTED) {
        // The layer's own directory: a view's bind source, or its nearest lower dir.
        Mounts view;
        const std::string vkey = "check-" + i.name();
        ASSERT_TRUE(View(vkey, i.name(), &view).ok());
        std::string dir = view[0].source();
        if (view[0].type() == "overlay") {
          const std::string lower = view[0].options(0);
          dir = lower.substr(
              9, lower.find(':') == std::string::npos ? std::string::npos : lower.find(':') - 9);
        }
        EXPECT_EQ(ReadFile(dir + "/file"), i.name());
        ASSERT_TRUE(Remove(vkey).ok());
      }
    }
  }
}

// ---- Remote (overlaybd) layers, against a fake dadi-blockd served by the test process ----

namespace blockd_pb = ::dadi::blockd::v1;

// Serves dadi.blockd.v1.Blockd on a unix socket: Attach "mounts" a stack by making a directory
// holding one file per layer (named after its digest's hex, holding the repository) and
// counts references as blockd does.
class FakeBlockd final : public blockd_pb::Blockd::Service {
 public:
  explicit FakeBlockd(std::string dir) : dir_(std::move(dir)) {}

  grpc::Status Attach(grpc::ServerContext*, const blockd_pb::AttachRequest* req,
                      blockd_pb::AttachResponse* resp) override {
    std::lock_guard lock(mu_);
    ++attach_calls_;
    if (req->id().empty() || req->layers_size() == 0) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "id and layers are required");
    }
    Device& d = devices_[req->id()];
    if (d.refcount == 0) {
      d.layers.assign(req->layers().begin(), req->layers().end());
      d.mount_point = dir_ + "/" + req->id();
      std::filesystem::create_directories(d.mount_point);
      for (const auto& l : req->layers()) {
        std::ofstream(d.mount_point + "/" + l.digest().substr(7, 12)) << l.repository();
      }
    }
    ++d.refcount;
    resp->set_id(req->id());
    resp->set_device_path("/dev/loop-fake");
    resp->set_mount_point(d.mount_point);
    resp->set_refcount(d.refcount);
    return grpc::Status::OK;
  }

  grpc::Status Detach(grpc::ServerContext*, const blockd_pb::DetachRequest* req,
                      blockd_pb::DetachResponse* resp) override {
    std::lock_guard lock(mu_);
    ++detach_calls_;
    auto it = devices_.find(req->id());
    if (it == devices_.end()) return grpc::Status(grpc::StatusCode::NOT_FOUND, "no such device");
    if (--it->second.refcount == 0 || req->force()) {
      std::filesystem::remove_all(it->second.mount_point);
      devices_.erase(it);
      resp->set_refcount(0);
    } else {
      resp->set_refcount(it->second.refcount);
    }
    return grpc::Status::OK;
  }

  grpc::Status Stat(grpc::ServerContext*, const blockd_pb::StatRequest* req,
                    blockd_pb::StatResponse* resp) override {
    std::lock_guard lock(mu_);
    auto it = devices_.find(req->id());
    if (it == devices_.end()) return grpc::Status(grpc::StatusCode::NOT_FOUND, "no such device");
    resp->set_refcount(it->second.refcount);
    resp->mutable_attachment()->set_id(req->id());
    resp->mutable_attachment()->set_mount_point(it->second.mount_point);
    return grpc::Status::OK;
  }

  // What a reboot does to blockd: everything is gone.
  void Forget() {
    std::lock_guard lock(mu_);
    for (auto& [id, d] : devices_) std::filesystem::remove_all(d.mount_point);
    devices_.clear();
  }

  struct Device {
    uint64_t refcount = 0;
    std::string mount_point;
    std::vector<blockd_pb::Layer> layers;
  };
  std::map<std::string, Device> devices() {
    std::lock_guard lock(mu_);
    return devices_;
  }
  int attach_calls() {
    std::lock_guard lock(mu_);
    return attach_calls_;
  }
  int detach_calls() {
    std::lock_guard lock(mu_);
    return detach_calls_;
  }

 private:
  std::string dir_;
  std::mutex mu_;
  std::map<std::string, Device> devices_;
  int attach_calls_ = 0;
  int detach_calls_ = 0;
};

std::string Sha(char c) { return "sha256:" + std::string(64, c); }

class RemoteConformanceTest : public ConformanceTest {
 protected:
  void SetUp() override {
    ASSERT_FALSE(scratch_.path().empty());
    blockd_ = std::make_unique<FakeBlockd>(scratch_.Join("blockd-mnt"));
    ASSERT_NO_FATAL_FAILURE(StartBlockd());
    ConformanceTest::SetUp();
  }

  void TearDown() override {
    ConformanceTest::TearDown();
    StopBlockd();
  }

  std::vector<std::string> DaemonArgs() override { return {"--blockd-address", blockd_socket()}; }

  std::string blockd_socket() const { return scratch_.Join("blockd.sock"); }

  void StartBlockd() {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("unix:" + blockd_socket(), grpc::InsecureServerCredentials());
    builder.RegisterService(blockd_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
  }

  void StopBlockd() {
    if (server_) {
      server_->Shutdown(std::chrono::system_clock::now());
      server_.reset();
    }
  }

  // The labels containerd's unpacker passes for a layer of an image dadi converted.
  static Labels LayerLabels(const std::string& chain_id, char digest) {
    return {{"containerd.io/snapshot.ref", chain_id},
            {"containerd.io/snapshot/overlaybd/blob-digest", Sha(digest)},
            {"containerd.io/snapshot/overlaybd/blob-size", "123456"},
            {"containerd.io/snapshot/overlaybd/version", "0.1.0"},
            {"containerd.io/snapshot/cri.image-ref", "registry.test:5000/dadi/app:v1"},
            {"containerd.io/snapshot/cri.layer-digest", Sha(digest)}};
  }

  // Unpacks a two-layer overlaybd image as containerd does: Prepare of each layer with the
  // chain id as snapshot.ref; both must answer ALREADY_EXISTS.
  void PullImage() {
    grpc::Status st = Prepare("default/1/extract-1 " + Sha('1'), "", LayerLabels(Sha('1'), 'a'));
    ASSERT_EQ(st.error_code(), grpc::StatusCode::ALREADY_EXISTS) << st.error_message();
    st = Prepare("default/2/extract-2 " + Sha('2'), Sha('1'), LayerLabels(Sha('2'), 'b'));
    ASSERT_EQ(st.error_code(), grpc::StatusCode::ALREADY_EXISTS) << st.error_message();
  }

  grpc::Status GetMountsOf(const std::string& key, Mounts* mounts) {
    grpc::ClientContext ctx;
    Init(&ctx);
    pb::MountsRequest req;
    req.set_key(key);
    pb::MountsResponse resp;
    grpc::Status st = stub_->Mounts(&ctx, req, &resp);
    *mounts = resp.mounts();
    return st;
  }

  std::unique_ptr<FakeBlockd> blockd_;
  std::unique_ptr<grpc::Server> server_;
};

TEST_F(RemoteConformanceTest, PullCommitsLayersWithoutFetchingAnything) {
  ASSERT_NO_FATAL_FAILURE(PullImage());
  pb::Info info;
  ASSERT_TRUE(Stat(Sha('2'), &info).ok());
  EXPECT_EQ(info.kind(), pb::COMMITTED);
  EXPECT_EQ(info.parent(), Sha('1'));
  EXPECT_EQ(info.labels().at("containerd.io/snapshot.ref"), Sha('2'));
  EXPECT_EQ(info.labels().at("containerd.io/snapshot/overlaybd/blob-digest"), Sha('b'));
  EXPECT_EQ(info.labels().at("containerd.io/snapshot/dadi/remote-repository"),
            "registry.test:5000/dadi/app");
  // containerd's metadata store finds the target with this walk after ALREADY_EXISTS.
  EXPECT_THAT(ListNames({absl::StrCat("labels.\"containerd.io/snapshot.ref\"==", Sha('2'),
                                      ",parent==\"", Sha('1'), "\"")}),
              ElementsAre(Sha('2')));
  // Pulling again (another namespace) answers the same.
  grpc::Status st = Prepare("other/9/extract-x", Sha('1'), LayerLabels(Sha('2'), 'b'));
  EXPECT_EQ(st.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(blockd_->attach_calls(), 0);
}

TEST_F(RemoteConformanceTest, ContainerRunsOnTheAttachedStack) {
  ASSERT_NO_FATAL_FAILURE(PullImage());
  Mounts mounts;
  grpc::Status st = Prepare("default/3/ctr", Sha('2'), {}, &mounts);
  ASSERT_TRUE(st.ok()) << st.error_message() << "\n" << daemon_->Log();
  auto devices = blockd_->devices();
  ASSERT_EQ(devices.size(), 1u);
  const auto& [id, dev] = *devices.begin();
  EXPECT_EQ(dev.refcount, 1u);
  ASSERT_EQ(dev.layers.size(), 2u);
  EXPECT_EQ(dev.layers[0].digest(), Sha('a'));  // bottom first
  EXPECT_EQ(dev.layers[1].digest(), Sha('b'));
  EXPECT_EQ(dev.layers[1].size(), 123456u);
  EXPECT_EQ(dev.layers[1].repository(), "registry.test:5000/dadi/app");
  ASSERT_EQ(mounts.size(), 1);
  EXPECT_EQ(mounts[0].type(), "overlay");
  EXPECT_THAT(Options(mounts[0]), ::testing::Contains("lowerdir=" + dev.mount_point));

  // The container sees the device's files and writes into its own upper dir.
  const std::string rootfs = MountPoint();
  ASSERT_TRUE(mounter().Mount(mounts, rootfs).ok());
  EXPECT_EQ(ReadFile(rootfs + "/" + std::string(12, 'b')), "registry.test:5000/dadi/app");
  WriteFile(rootfs + "/new", "written");
  EXPECT_FALSE(std::filesystem::exists(dev.mount_point + "/new"));
  ASSERT_TRUE(mounter().Unmount(rootfs).ok());

  // A second container and a view share the device; views are read-only.
  ASSERT_TRUE(Prepare("default/4/ctr2", Sha('2')).ok());
  Mounts view;
  ASSERT_TRUE(View("default/5/view", Sha('2'), &view).ok());
  ASSERT_EQ(view.size(), 1);
  EXPECT_EQ(view[0].source(), dev.mount_point);
  EXPECT_THAT(Options(view[0]), ::testing::Contains("ro"));
  const std::string vdir = MountPoint();
  ASSERT_TRUE(mounter().Mount(view, vdir).ok());
  EXPECT_FALSE(std::ofstream(vdir + "/nope").good());
  ASSERT_TRUE(mounter().Unmount(vdir).ok());
  EXPECT_EQ(blockd_->devices().begin()->second.refcount, 1u);

  // Remove of the last user detaches.
  ASSERT_TRUE(Remove("default/3/ctr").ok());
  ASSERT_TRUE(Remove("default/5/view").ok());
  EXPECT_EQ(blockd_->devices().size(), 1u);
  ASSERT_TRUE(Remove("default/4/ctr2").ok());
  EXPECT_TRUE(blockd_->devices().empty());
  EXPECT_EQ(blockd_->detach_calls(), 1);
  // The image's layers stay until containerd removes them.
  EXPECT_TRUE(Stat(Sha('2')).ok());
  ASSERT_TRUE(Remove(Sha('2')).ok());
  ASSERT_TRUE(Remove(Sha('1')).ok());
}

TEST_F(RemoteConformanceTest, MountsReattachesAfterRebootAndSnapshotterKill) {
  ASSERT_NO_FATAL_FAILURE(PullImage());
  Mounts before;
  ASSERT_TRUE(Prepare("default/3/ctr", Sha('2'), {}, &before).ok());
  // The snapshotter dies and the node reboots: blockd comes back empty.
  daemon_->Kill();
  blockd_->Forget();
  ASSERT_TRUE(daemon_->Start(DaemonArgs()).ok()) << daemon_->Log();
  stub_ = daemon_->Connect();
  Mounts after;
  grpc::Status st = GetMountsOf("default/3/ctr", &after);
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_EQ(after.size(), 1);
  EXPECT_EQ(after[0].SerializeAsString(), before[0].SerializeAsString());
  EXPECT_EQ(blockd_->attach_calls(), 2);
  ASSERT_EQ(blockd_->devices().size(), 1u);
  const std::string rootfs = MountPoint();
  ASSERT_TRUE(mounter().Mount(after, rootfs).ok());
  EXPECT_TRUE(std::filesystem::exists(rootfs + "/" + std::string(12, 'a')));
  ASSERT_TRUE(mounter().Unmount(rootfs).ok());
  // A snapshotter restart alone (blockd kept its devices) takes no new reference.
  Restart();
  ASSERT_TRUE(GetMountsOf("default/3/ctr", &after).ok());
  EXPECT_EQ(blockd_->devices().begin()->second.refcount, 1u);
}

TEST_F(RemoteConformanceTest, BlockdDownIsUnavailableAndLeavesNoSnapshot) {
  ASSERT_NO_FATAL_FAILURE(PullImage());
  StopBlockd();
  grpc::Status st = Prepare("default/3/ctr", Sha('2'));
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE) << st.error_message();
  EXPECT_EQ(Stat("default/3/ctr").error_code(), grpc::StatusCode::NOT_FOUND);
  ASSERT_NO_FATAL_FAILURE(StartBlockd());
  st = Prepare("default/3/ctr", Sha('2'));
  EXPECT_TRUE(st.ok()) << st.error_message();
}

TEST_F(ConformanceTest, RemoteLayersDisabledMeansContainerdDownloads) {
  // The default fixture runs with blockd_address = "": an overlaybd layer is an ordinary one.
  Mounts mounts;
  grpc::Status st = Prepare("default/1/extract", "",
                            {{"containerd.io/snapshot.ref", Sha('1')},
                             {"containerd.io/snapshot/overlaybd/blob-digest", Sha('a')},
                             {"containerd.io/snapshot/overlaybd/blob-size", "10"},
                             {"containerd.io/snapshot/dadi/repository", "registry.test/app"}},
                            &mounts);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(mounts[0].type(), "bind");
  EXPECT_EQ(Stat(Sha('1')).error_code(), grpc::StatusCode::NOT_FOUND);
}

}  // namespace
}  // namespace dadi::testing
