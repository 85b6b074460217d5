// Remote (overlaybd) layers in the snapshot semantics, with a fake BlockAttacher: which
// Prepare calls become committed remote snapshots, how mounts of containers on them look, and
// when the stack is attached and detached.
#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "snapshotter/remote_labels.h"
#include "snapshotter/snapshotter.h"
#include "tests/support/scratch_dir.h"

namespace dadi::snapshotter {
namespace {

using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::Not;

// Attaches by creating a directory; remembers what is attached and every call.
class FakeAttacher : public BlockAttacher {
 public:
  explicit FakeAttacher(std::string dir) : dir_(std::move(dir)) {}

  absl::StatusOr<std::string> Attach(const std::string& id, const std::vector<RemoteLayer>& layers,
                                     const std::optional<StartupTraceRef>& trace) override {
    std::lock_guard lock(mu_);
    if (!fail_.ok()) return fail_;
    const std::string mp = absl::StrCat(dir_, "/", id);
    if (attached_.count(id) == 0) {
      std::filesystem::create_directories(mp);
      attached_[id] = layers;
      traces_[id] = trace;
      ++attaches_;
    }
    return mp;
  }
  std::optional<StartupTraceRef> trace(const std::string& id) {
    std::lock_guard lock(mu_);
    return traces_[id];
  }
  // Like blockd, an id that is not attached is no error; only real detaches are recorded.
  absl::Status Detach(const std::string& id) override {
    std::lock_guard lock(mu_);
    if (attached_.erase(id) > 0) detached_.push_back(id);
    return absl::OkStatus();
  }

  // blockd restarted without its state, or the node rebooted.
  void Forget() {
    std::lock_guard lock(mu_);
    attached_.clear();
  }
  void Fail(absl::Status st) {
    std::lock_guard lock(mu_);
    fail_ = std::move(st);
  }
  std::map<std::string, std::vector<RemoteLayer>> attached() {
    std::lock_guard lock(mu_);
    return attached_;
  }
  int attaches() {
    std::lock_guard lock(mu_);
    return attaches_;
  }
  std::vector<std::string> detached() {
    std::lock_guard lock(mu_);
    return detached_;
  }
  std::string MountPoint(const std::string& id) const { return absl::StrCat(dir_, "/", id); }

 private:
  std::string dir_;
  std::mutex mu_;
  absl::Status fail_;
  std::map<std::string, std::vector<RemoteLayer>> attached_;
  std::map<std::string, std::optional<StartupTraceRef>> traces_;
  int attaches_ = 0;
  std::vector<std::string> detached_;
};

std::string Digest(char c) { return "sha256:" + std::string(64, c); }

// The labels containerd's unpacker gives the Prepare of an overlaybd layer.
Labels LayerLabels(const std::string& target, char digest, const std::string& image_ref = "") {
  Labels l = {{kLabelSnapshotRef, target},
              {kLabelBlobDigest, Digest(digest)},
              {kLabelBlobSize, "4096"},
              {"containerd.io/snapshot/overlaybd/version", "0.1.0"},
              {kLabelDadiRepository, "registry.test:5000/dadi/app"}};
  if (!image_ref.empty()) l[kLabelCriImageRef] = image_ref;
  return l;
}

std::string Option(const Mount& m, const std::string& prefix) {
  for (const std::string& o : m.options) {
    if (o.rfind(prefix, 0) == 0) return o.substr(prefix.size());
  }
  return "";
}

class RemoteLayerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    attacher_ = std::make_shared<FakeAttacher>(scratch_.Join("mnt"));
    Open();
  }

  void Open(bool remote = true) {
    s_.reset();
    auto s = Snapshotter::Open(scratch_.Join("root"), remote ? attacher_ : nullptr);
    ASSERT_TRUE(s.ok()) << s.status();
    s_ = *std::move(s);
  }

  // As containerd unpacks an overlaybd layer: Prepare of an extract key with the labels.
  absl::Status PrepareLayer(const std::string& target, const std::string& parent, char digest,
                            const std::string& image_ref = "") {
    return s_
        ->Prepare(absl::StrCat("default/1/extract-", target), parent,
                  LayerLabels(target, digest, image_ref))
        .status();
  }

  // Two remote layers "r1" (bottom) and "r2".
  void RemoteChain() {
    ASSERT_EQ(PrepareLayer("r1", "", 'a').code(), absl::StatusCode::kAlreadyExists);
    ASSERT_EQ(PrepareLayer("r2", "r1", 'b').code(), absl::StatusCode::kAlreadyExists);
  }

  std::string DeviceId() const { return Snapshotter::AttachId("r2", 0); }

  dadi::testing::ScratchDir scratch_{"dadi-snap-remote"};
  std::shared_ptr<FakeAttacher> attacher_;
  std::unique_ptr<Snapshotter> s_;
};

TEST_F(RemoteLayerTest, OverlaybdLayerIsCommittedUnderItsRefAndAnswersAlreadyExists) {
  ASSERT_NO_FATAL_FAILURE(RemoteChain());
  auto r2 = s_->Stat("r2");
  ASSERT_TRUE(r2.ok()) << r2.status();
  EXPECT_EQ(r2->kind, Kind::kCommitted);
  EXPECT_EQ(r2->parent, "r1");
  EXPECT_EQ(r2->labels.at(kLabelSnapshotRef), "r2");
  EXPECT_EQ(r2->labels.at(kLabelBlobDigest), Digest('b'));
  EXPECT_EQ(r2->labels.at(kLabelDadiRemote), "registry.test:5000/dadi/app");
  // The extract key itself was never created, and nothing was attached for a pull.
  EXPECT_EQ(s_->Stat("default/1/extract-r2").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(attacher_->attaches(), 0);
  // Again (a second namespace, a retried pull): still ALREADY_EXISTS, nothing new.
  EXPECT_EQ(PrepareLayer("r2", "r1", 'b').code(), absl::StatusCode::kAlreadyExists);
  // What containerd's metadata store walks for after ALREADY_EXISTS.
  auto f = ParseFilters({"labels.\"containerd.io/snapshot.ref\"==r2,parent==\"r1\""});
  ASSERT_TRUE(f.ok()) << f.status();
  std::vector<std::string> found;
  ASSERT_TRUE(s_->Walk(*f, [&](const Info& i) {
                  found.push_back(i.name);
                  return absl::OkStatus();
                }).ok());
  EXPECT_THAT(found, ElementsAre("r2"));
  // Usage of a remote layer: nothing on this node's disk.
  EXPECT_EQ(s_->GetUsage("r2")->size, 0);
}

TEST_F(RemoteLayerTest, RepositoryComesFromImageRefThenConvertAnnotation) {
  ASSERT_EQ(PrepareLayer("a", "", 'a', "registry.test:5000/team/app:v1").code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(s_->Stat("a")->labels.at(kLabelDadiRemote), "registry.test:5000/team/app");
  Labels l = LayerLabels("b", 'b');
  l.erase(kLabelDadiRepository);
  l[kLabelImageRef] = "ubuntu:22.04";
  ASSERT_EQ(s_->Prepare("k-b", "", l).status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(s_->Stat("b")->labels.at(kLabelDadiRemote), "docker.io/library/ubuntu");

  // No repository anywhere: containerd has to download the layer.
  l = LayerLabels("c", 'c');
  l.erase(kLabelDadiRepository);
  auto m = s_->Prepare("k-c", "", l);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(s_->Stat("k-c")->kind, Kind::kActive);
  EXPECT_EQ(s_->Stat("c").status().code(), absl::StatusCode::kNotFound);
}

// A configured fallback repository serves layers whose labels name none; labels that name one
// still win.
TEST_F(RemoteLayerTest, FallbackRepositoryServesLayersThatNameNone) {
  s_.reset();
  auto s = Snapshotter::Open(scratch_.Join("root"), attacher_, "mirror.test:5000/converted");
  ASSERT_TRUE(s.ok()) << s.status();
  s_ = *std::move(s);
  Labels l = LayerLabels("f", 'f');  // 'f': a hex digit
  l.erase(kLabelDadiRepository);
  ASSERT_EQ(s_->Prepare("k-f", "", l).status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(s_->Stat("f")->labels.at(kLabelDadiRemote), "mirror.test:5000/converted");
  ASSERT_EQ(PrepareLayer("g", "f", 'b', "registry.test:5000/team/app:v1").code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(s_->Stat("g")->labels.at(kLabelDadiRemote), "registry.test:5000/team/app");
}

TEST_F(RemoteLayerTest, MalformedOrMisplacedOverlaybdLayersArePreparedAsOrdinary) {
  Labels bad = LayerLabels("x", 'a');
  bad[kLabelBlobDigest] = "sha256:XYZ";
  ASSERT_TRUE(s_->Prepare("k-x", "", bad).ok());
  bad = LayerLabels("y", 'a');
  bad[kLabelBlobSize] = "-5";
  ASSERT_TRUE(s_->Prepare("k-y", "", bad).ok());
  // Without containerd.io/snapshot.ref there is nothing to commit.
  Labels no_ref = LayerLabels("z", 'a');
  no_ref.erase(kLabelSnapshotRef);
  ASSERT_TRUE(s_->Prepare("k-z", "", no_ref).ok());
  // On an ordinary layer a block device cannot stack: unpacked as usual.
  ASSERT_TRUE(s_->Prepare("k-t", "", {}).ok());
  ASSERT_TRUE(s_->Commit("tar", "k-t", {}).ok());
  auto m = s_->Prepare("k-o", "tar", LayerLabels("o", 'b'));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(s_->Stat("o").status().code(), absl::StatusCode::kNotFound);
  // A missing parent is NOT_FOUND, as for any Prepare.
  EXPECT_EQ(PrepareLayer("p", "nope", 'c').code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(attacher_->attaches(), 0);
}

TEST_F(RemoteLayerTest, ContainerGetsAttachedStackAsLowestLowerdir) {
  ASSERT_NO_FATAL_FAILURE(RemoteChain());
  auto m = s_->Prepare("default/5/ctr", "r2", {});
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(m->size(), 1u);
  EXPECT_EQ((*m)[0].type, "overlay");
  const std::string mp = attacher_->MountPoint(DeviceId());
  EXPECT_EQ(Option((*m)[0], "lowerdir="), mp);
  EXPECT_FALSE(Option((*m)[0], "upperdir=").empty());
  EXPECT_NE(Option((*m)[0], "upperdir=").find(scratch_.Join("root/snapshots/")), std::string::npos);
  EXPECT_FALSE(Option((*m)[0], "workdir=").empty());
  // The whole stack, bottom first, with the facts from the labels.
  auto attached = attacher_->attached();
  ASSERT_EQ(attached.count(DeviceId()), 1u);
  EXPECT_THAT(attached[DeviceId()],
              ElementsAre(RemoteLayer{Digest('a'), 4096, "registry.test:5000/dadi/app"},
                          RemoteLayer{Digest('b'), 4096, "registry.test:5000/dadi/app"}));
  // Mounts gives the same; a second container shares the device.
  auto again = s_->Mounts("default/5/ctr");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *m);
  ASSERT_TRUE(s_->Prepare("default/6/ctr2", "r2", {}).ok());
  EXPECT_EQ(attacher_->attaches(), 1);
}

// The startup trace named on the top layer goes to blockd with the attach; a malformed one, or
// one on a lower layer only, does not.
TEST_F(RemoteLayerTest, TopLayersStartupTraceGoesWithTheAttach) {
  const std::string trace_digest = Digest('c');
  Labels bottom = LayerLabels("r1", 'a');
  bottom[kLabelStartupTraceDigest] = Digest('d');
  bottom[kLabelStartupTraceSize] = "99";
  ASSERT_EQ(s_->Prepare("x-r1", "", bottom).status().code(), absl::StatusCode::kAlreadyExists);
  Labels top = LayerLabels("r2", 'b');
  top[kLabelStartupTraceDigest] = trace_digest;
  top[kLabelStartupTraceSize] = "1234";
  ASSERT_EQ(s_->Prepare("x-r2", "r1", top).status().code(), absl::StatusCode::kAlreadyExists);
  // The pull itself has the traced stacks attached ahead of any container, in the
  // background: r1 alone (its own trace), and r1+r2.
  auto both_attached = [&] { return attacher_->attached().size() == 2; };
  for (int i = 0; i < 500 && !both_attached(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(both_attached());
  EXPECT_EQ(attacher_->attached()[DeviceId()],
            (std::vector<RemoteLayer>{{Digest('a'), 4096, "registry.test:5000/dadi/app"},
                                      {Digest('b'), 4096, "registry.test:5000/dadi/app"}}));
  EXPECT_EQ(attacher_->trace(DeviceId()), (StartupTraceRef{trace_digest, 1234}));
  // The first container finds its device attached already.
  ASSERT_TRUE(s_->Prepare("default/7/ctr", "r2", {}).ok());
  EXPECT_EQ(attacher_->attaches(), 2);
  // Removing the container leaves no user: the device goes.
  ASSERT_TRUE(s_->Remove("default/7/ctr").ok());
  EXPECT_THAT(attacher_->detached(), Contains(DeviceId()));

  Labels bad = LayerLabels("r3", 'e');
  bad[kLabelStartupTraceDigest] = trace_digest;
  bad[kLabelStartupTraceSize] = "-1";
  ASSERT_EQ(s_->Prepare("x-r3", "r1", bad).status().code(), absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE(s_->Prepare("default/8/ctr", "r3", {}).ok());
  int found = 0;
  for (const auto& [id, layers] : attacher_->attached()) {
    if (layers.size() == 2 && layers[1].digest == Digest('e')) {
      ++found;
      EXPECT_EQ(attacher_->trace(id), std::nullopt) << "a malformed size was passed on";
    }
  }
  EXPECT_EQ(found, 1);

  // r1 was attached ahead (its own trace) and no container ever used it: it is detached when
  // the layer itself goes.
  std::string r1_device;
  for (const auto& [id, layers] : attacher_->attached()) {
    if (layers.size() == 1) r1_device = id;
  }
  ASSERT_FALSE(r1_device.empty());
  for (const char* key : {"default/8/ctr", "r3", "r2"}) ASSERT_TRUE(s_->Remove(key).ok()) << key;
  EXPECT_THAT(attacher_->detached(), Not(Contains(r1_device)));
  ASSERT_TRUE(s_->Remove("r1").ok());
  EXPECT_THAT(attacher_->detached(), Contains(r1_device));
}

TEST_F(RemoteLayerTest, OrdinaryLayersAboveTheStackComeFirst) {
  ASSERT_NO_FATAL_FAILURE(RemoteChain());
  // containerd applies a tar layer on top of the stack: its extraction snapshot needs the
  // stack below it too.
  auto ex = s_->Prepare("extract-t1", "r2", {{kLabelSnapshotRef, "t1"}});
  ASSERT_TRUE(ex.ok()) << ex.status();
  const std::string mp = attacher_->MountPoint(DeviceId());
  EXPECT_EQ(Option((*ex)[0], "lowerdir="), mp);
  const std::string t1_dir = Option((*ex)[0], "upperdir=");
  ASSERT_TRUE(s_->Commit("t1", "extract-t1", {}).ok());
  ASSERT_TRUE(s_->Prepare("extract-t2", "t1", {}).ok());
  auto t2 = s_->Mounts("extract-t2");
  ASSERT_TRUE(t2.ok());
  const std::string t2_dir = Option((*t2)[0], "upperdir=");
  ASSERT_TRUE(s_->Commit("t2", "extract-t2", {}).ok());

  auto m = s_->Prepare("ctr", "t2", {});
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(Option((*m)[0], "lowerdir="), absl::StrCat(t2_dir, ":", t1_dir, ":", mp));
  auto v = s_->View("view", "t2", {});
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ((*v)[0].type, "overlay");
  EXPECT_EQ(Option((*v)[0], "lowerdir="), absl::StrCat(t2_dir, ":", t1_dir, ":", mp));
  EXPECT_EQ(Option((*v)[0], "upperdir="), "");
  EXPECT_EQ(Option((*v)[0], "workdir="), "");
}

TEST_F(RemoteLayerTest, ViewOfTheStackIsAReadOnlyBindOfItsMountPoint) {
  ASSERT_NO_FATAL_FAILURE(RemoteChain());
  auto v = s_->View("default/7/view", "r2", {});
  ASSERT_TRUE(v.ok()) << v.status();
  ASSERT_EQ(v->size(), 1u);
  EXPECT_EQ((*v)[0].type, "bind");
  EXPECT_EQ((*v)[0].source, attacher_->MountPoint(DeviceId()));
  EXPECT_THAT((*v)[0].options, ElementsAre("ro", "rbind"));
}

TEST_F(RemoteLayerTest, RemovingOrCommittingTheLastUserDetaches) {
  ASSERT_NO_FATAL_FAILURE(RemoteChain());
  ASSERT_TRUE(s_->Prepare("c1", "r2", {}).ok());
  ASSERT_TRUE(s_->View("v1", "r2", {}).ok());
  ASSERT_TRUE(s_->Remove("c1").ok());
  EXPECT_THAT(attacher_->detached(), IsEmpty());
  ASSERT_TRUE(s_->Remove("v1").ok());
  EXPECT_THAT(attacher_->detached(), ElementsAre(DeviceId()));
  // The remote layers themselves stay (containerd's GC removes them, children first).
  EXPECT_EQ(s_->Remove("r1").code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(s_->Remove("r2").ok());
  ASSERT_TRUE(s_->Remove("r1").ok());
  EXPECT_EQ(attacher_->detached().size(), 1u);

  // A committed snapshot is no user: committing the only one detaches.
  ASSERT_NO_FATAL_FAILURE(RemoteChain());
  ASSERT_TRUE(s_->Prepare("extract-t", "r2", {}).ok());
  EXPECT_EQ(attacher_->attaches(), 2);
  ASSERT_TRUE(s_->Commit("t", "extract-t", {}).ok());
  EXPECT_EQ(attacher_->detached().size(), 2u);
  EXPECT_TRUE(attacher_->attached().empty());
}

TEST_F(RemoteLayerTest, MountsReattachesAfterRestartOrReboot) {
  ASSERT_NO_FATAL_FAILURE(RemoteChain());
  auto m = s_->Prepare("ctr", "r2", {});
  ASSERT_TRUE(m.ok());
  // The snapshotter restarts while blockd keeps the device: nothing to do.
  Open();
  ASSERT_TRUE(s_->Mounts("ctr").ok());
  EXPECT_EQ(attacher_->attaches(), 1);
  // The node reboots: blockd has nothing attached, the snapshotter's metadata survived.
  attacher_->Forget();
  Open();
  auto after = s_->Mounts("ctr");
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(*after, *m);
  EXPECT_EQ(attacher_->attaches(), 2);
  EXPECT_EQ(attacher_->attached().count(DeviceId()), 1u);
  // Without blockd (remote layers switched off), the snapshot cannot be mounted.
  Open(/*remote=*/false);
  EXPECT_EQ(s_->Mounts("ctr").status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(RemoteLayerTest, FailedAttachLeavesNoSnapshot) {
  ASSERT_NO_FATAL_FAILURE(RemoteChain());
  attacher_->Fail(absl::UnavailableError("blockd is down"));
  EXPECT_EQ(s_->Prepare("ctr", "r2", {}).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(s_->Stat("ctr").status().code(), absl::StatusCode::kNotFound);
  attacher_->Fail(absl::OkStatus());
  ASSERT_TRUE(s_->Prepare("ctr", "r2", {}).ok());
}

TEST_F(RemoteLayerTest, DisabledRemoteLayersArePreparedAsOrdinary) {
  Open(/*remote=*/false);
  auto m = s_->Prepare("extract-r1", "", LayerLabels("r1", 'a'));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)[0].type, "bind");
  EXPECT_EQ(s_->Stat("r1").status().code(), absl::StatusCode::kNotFound);
  // containerd unpacks, then commits with the layer's labels: an ordinary layer.
  ASSERT_TRUE(s_->Commit("r1", "extract-r1", LayerLabels("r1", 'a')).ok());
  // Turning remote layers on later does not make it a remote one.
  Open();
  auto c = s_->Prepare("ctr", "r1", {});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)[0].type, "overlay");
  EXPECT_EQ(attacher_->attaches(), 0);
}

TEST(RemoteLabelsTest, RepositoryOfImageRef) {
  EXPECT_EQ(RepositoryOfImageRef("docker.io/library/ubuntu:22.04"), "docker.io/library/ubuntu");
  EXPECT_EQ(RepositoryOfImageRef("127.0.0.1:5000/app@sha256:" + std::string(64, '0')),
            "127.0.0.1:5000/app");
  EXPECT_EQ(RepositoryOfImageRef("127.0.0.1:5000/a/b:tag@sha256:00"), "127.0.0.1:5000/a/b");
  EXPECT_EQ(RepositoryOfImageRef("localhost/app"), "localhost/app");
  EXPECT_EQ(RepositoryOfImageRef("ubuntu"), "docker.io/library/ubuntu");
  EXPECT_EQ(RepositoryOfImageRef("team/app:1"), "docker.io/team/app");
  EXPECT_EQ(RepositoryOfImageRef("registry.test:5000/dadi/app"), "registry.test:5000/dadi/app");
  EXPECT_EQ(RepositoryOfImageRef(""), "");
  EXPECT_EQ(RepositoryOfImageRef("a b"), "");
}

TEST(RemoteLabelsTest, AttachIdsAreValidBlockdIds) {
  const std::string chain = "sha256:" + std::string(64, 'f');
  EXPECT_EQ(Snapshotter::AttachId(chain, 3), "snap-sha256-" + std::string(64, 'f'));
  EXPECT_EQ(Snapshotter::AttachId("a/b c", 3), "snap-a-b-c");
  EXPECT_EQ(Snapshotter::AttachId(std::string(300, 'x'), 42), "snap-id-42");
}

}  // namespace
}  // namespace dadi::snapshotter
