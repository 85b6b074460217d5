// The snapshot semantics, on the Snapshotter itself (SQLite store and directories, no gRPC).
#include "snapshotter/snapshotter.h"

#include <sys/stat.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/scratch_dir.h"

namespace dadi::snapshotter {
namespace {

using ::testing::ElementsAre;
using ::testing::UnorderedElementsAre;

class SnapshotterTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(); }

  void Open() {
    s_.reset();
    auto s = Snapshotter::Open(root());
    ASSERT_TRUE(s.ok()) << s.status();
    s_ = *std::move(s);
  }

  std::string root() const { return scratch_.Join("root"); }

  std::vector<std::string> Names(const std::vector<std::string>& filters = {}) {
    auto f = ParseFilters(filters);
    EXPECT_TRUE(f.ok()) << f.status();
    std::vector<std::string> names;
    EXPECT_TRUE(s_->Walk(*f, [&](const Info& i) {
                    names.push_back(i.name);
                    return absl::OkStatus();
                  }).ok());
    return names;
  }

  // Prepares, writes one file into the upper dir, commits.
  void Layer(const std::string& name, const std::string& parent, const std::string& file = "f") {
    const std::string key = absl::StrCat("tmp-", name);
    auto m = s_->Prepare(key, parent, {});
    ASSERT_TRUE(m.ok()) << m.status();
    std::ofstream(absl::StrCat(UpperDir(*m), "/", file)) << name;
    ASSERT_TRUE(s_->Commit(name, key, {}).ok());
  }

  static std::string UpperDir(const std::vector<Mount>& m) {
    if (m[0].type == "bind") return m[0].source;
    for (const auto& o : m[0].options) {
      if (o.rfind("upperdir=", 0) == 0) return o.substr(9);
    }
    return "";
  }

  size_t SnapshotDirs() {
    size_t n = 0;
    for ([[maybe_unused]] const auto& e :
         std::filesystem::directory_iterator(root() + "/snapshots")) {
      ++n;
    }
    return n;
  }

  dadi::testing::ScratchDir scratch_{"dadi-snap-unit"};
  std::unique_ptr<Snapshotter> s_;
};

TEST_F(SnapshotterTest, LayoutAndLock) {
  struct stat st;
  ASSERT_EQ(stat(root().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  EXPECT_TRUE(std::filesystem::is_directory(root() + "/snapshots"));
  EXPECT_TRUE(std::filesystem::is_directory(root() + "/staging"));
  EXPECT_TRUE(std::filesystem::exists(root() + "/metadata.db"));
  auto second = Snapshotter::Open(root());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(SnapshotterTest, ChainKindsAndParents) {
  ASSERT_NO_FATAL_FAILURE(Layer("l1", ""));
  ASSERT_NO_FATAL_FAILURE(Layer("l2", "l1"));
  ASSERT_TRUE(s_->Prepare("a", "l2", {{"k", "v"}}).ok());
  ASSERT_TRUE(s_->View("v", "l1", {}).ok());
  auto l2 = s_->Stat("l2");
  ASSERT_TRUE(l2.ok());
  EXPECT_EQ(l2->kind, Kind::kCommitted);
  EXPECT_EQ(l2->parent, "l1");
  auto a = s_->Stat("a");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->kind, Kind::kActive);
  EXPECT_EQ(a->labels.at("k"), "v");
  EXPECT_EQ(s_->Stat("v")->kind, Kind::kView);
  EXPECT_EQ(s_->Stat("tmp-l2").status().code(), absl::StatusCode::kNotFound);

  auto m = s_->Mounts("a");
  ASSERT_TRUE(m.ok());
  ASSERT_EQ(m->size(), 1u);
  EXPECT_EQ((*m)[0].type, "overlay");
  // lowerdir nearest first: l2's dir, then l1's.
  const std::string lower = (*m)[0].options[2];
  const std::string l1_dir = s_->Mounts("v")->front().source;
  EXPECT_TRUE(lower.size() > l1_dir.size() &&
              lower.compare(lower.size() - l1_dir.size(), l1_dir.size(), l1_dir) == 0)
      << lower;
}

TEST_F(SnapshotterTest, Errors) {
  using absl::StatusCode;
  ASSERT_TRUE(s_->Prepare("a", "", {}).ok());
  ASSERT_TRUE(s_->View("v", "", {}).ok());
  ASSERT_NO_FATAL_FAILURE(Layer("c", ""));
  EXPECT_EQ(s_->Prepare("a", "", {}).status().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(s_->Prepare("c", "", {}).status().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(s_->Prepare("x", "nope", {}).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(s_->Prepare("x", "a", {}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s_->View("x", "v", {}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s_->Commit("y", "v", {}).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(s_->Commit("y", "nope", {}).code(), StatusCode::kNotFound);
  EXPECT_EQ(s_->Commit("c", "a", {}).code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(s_->Mounts("c").status().code(), StatusCode::kFailedPrecondition);
  ASSERT_TRUE(s_->Prepare("child", "c", {}).ok());
  EXPECT_EQ(s_->Remove("c").code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(s_->Remove("nope").code(), StatusCode::kNotFound);
  EXPECT_EQ(s_->GetUsage("nope").status().code(), StatusCode::kNotFound);
  Labels big = {{"k", std::string(4096, 'v')}};
  EXPECT_EQ(s_->Prepare("big", "", big).status().code(), StatusCode::kInvalidArgument);
  // Failed creations leave no directory behind.
  EXPECT_EQ(SnapshotDirs(), 4u);
  EXPECT_TRUE(std::filesystem::is_empty(root() + "/staging"));
}

TEST_F(SnapshotterTest, UpdatePaths) {
  ASSERT_TRUE(s_->Prepare("a", "", {{"x", "1"}, {"y", "2"}}).ok());
  Info in;
  in.name = "a";
  in.labels = {{"x", "10"}, {"z", "3"}};
  auto out = s_->Update(in, {"labels.x", "labels.y"});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_THAT(out->labels,
              UnorderedElementsAre(std::pair<const std::string, std::string>("x", "10")));
  out = s_->Update(in, {"labels"});
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->labels, in.labels);
  EXPECT_EQ(s_->Update(in, {"parent"}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s_->Update(in, {"kind"}).status().code(), absl::StatusCode::kInvalidArgument);
  Info none;
  EXPECT_EQ(s_->Update(none, {}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(SnapshotterTest, WalkWithFilters) {
  ASSERT_NO_FATAL_FAILURE(Layer("l1", ""));
  ASSERT_TRUE(s_->Prepare("a", "l1", {{"containerd.io/snapshot.ref", "sha256:1"}}).ok());
  ASSERT_TRUE(s_->View("v", "", {}).ok());
  EXPECT_THAT(Names(), ElementsAre("l1", "a", "v"));
  EXPECT_THAT(Names({"kind==active", "kind==view"}), ElementsAre("a", "v"));
  EXPECT_THAT(Names({"parent==l1"}), ElementsAre("a"));
  EXPECT_THAT(Names({"labels.\"containerd.io/snapshot.ref\"~=^sha256:"}), ElementsAre("a"));
  EXPECT_THAT(Names({"name!=a,kind!=view"}), ElementsAre("l1"));
  EXPECT_THAT(Names({"unknownfield"}), ::testing::IsEmpty());
}

TEST_F(SnapshotterTest, UsageAndCleanup) {
  auto m = s_->Prepare("a", "", {});
  ASSERT_TRUE(m.ok());
  std::ofstream(UpperDir(*m) + "/data") << std::string(50000, 'd');
  auto u = s_->GetUsage("a");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->inodes, 2);
  EXPECT_GE(u->size, 50000);
  ASSERT_TRUE(s_->Commit("c", "a", {}).ok());
  // A committed snapshot reports what was measured at commit.
  std::ofstream(UpperDir(*m) + "/late") << "x";
  EXPECT_EQ(s_->GetUsage("c")->inodes, 2);

  std::filesystem::create_directories(root() + "/snapshots/77777/fs");
  std::filesystem::create_directories(root() + "/staging/rm-5/fs");
  std::filesystem::create_directories(root() + "/staging/new-inflight");
  ASSERT_TRUE(s_->Cleanup().ok());
  EXPECT_FALSE(std::filesystem::exists(root() + "/snapshots/77777"));
  EXPECT_FALSE(std::filesystem::exists(root() + "/staging/rm-5"));
  // A Prepare might be filling new-*: only a restart removes it.
  EXPECT_TRUE(std::filesystem::exists(root() + "/staging/new-inflight"));
  EXPECT_EQ(SnapshotDirs(), 1u);
}

TEST_F(SnapshotterTest, ReopenKeepsEverythingAndReconciles) {
  ASSERT_NO_FATAL_FAILURE(Layer("l1", ""));
  ASSERT_NO_FATAL_FAILURE(Layer("l2", "l1"));
  ASSERT_NO_FATAL_FAILURE(Layer("solo", ""));
  ASSERT_TRUE(s_->Prepare("a", "l2", {}).ok());
  const auto before = s_->Stat("l2");
  ASSERT_TRUE(before.ok());
  Open();
  EXPECT_TRUE(s_->reconcile_report().removed_dirs.empty());
  EXPECT_TRUE(s_->reconcile_report().dropped_snapshots.empty());
  const auto after = s_->Stat("l2");
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->created, before->created);
  EXPECT_EQ(after->parent, "l1");

  // l2's directory disappears, a stray appears: l2 and "a" above it are dropped.
  const std::string l2_lower = s_->Mounts("a")->front().options[2].substr(9);
  const std::string l2_fs = l2_lower.substr(0, l2_lower.find(':'));
  std::filesystem::remove_all(std::filesystem::path(l2_fs).parent_path());
  std::filesystem::create_directories(root() + "/snapshots/123456/fs");
  std::filesystem::create_directories(root() + "/staging/new-xyz/fs");
  Open();
  EXPECT_THAT(s_->reconcile_report().dropped_snapshots, UnorderedElementsAre("l2", "a"));
  EXPECT_THAT(Names(), ElementsAre("l1", "solo"));
  EXPECT_EQ(SnapshotDirs(), 2u);
  EXPECT_TRUE(std::filesystem::is_empty(root() + "/staging"));
}

TEST_F(SnapshotterTest, ConcurrentCallsDoNotCollide) {
  ASSERT_NO_FATAL_FAILURE(Layer("base", ""));
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        const std::string key = absl::StrCat("k", t, "-", i);
        const std::string name = absl::StrCat("c-", key);
        if (!s_->Prepare(key, "base", {}).ok()) failures++;
        if (i % 2 == 0 && !s_->Commit(name, key, {}).ok()) failures++;
        if (i % 3 == 0 && !s_->Remove(i % 2 == 0 ? name : key).ok()) failures++;
        if (i % 5 == 0 && !s_->Cleanup().ok()) failures++;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(SnapshotDirs(), Names().size());
}

}  // namespace
}  // namespace dadi::snapshotter
