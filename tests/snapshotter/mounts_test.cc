#include "snapshotter/mounts.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dadi::snapshotter {
namespace {

using ::testing::ElementsAre;

TEST(MountsTest, ActiveWithoutParentIsWritableBind) {
  EXPECT_THAT(BuildMounts({Kind::kActive, "/r/1/fs", "/r/1/work", {}}),
              ElementsAre(Mount{"bind", "/r/1/fs", {"rw", "rbind"}}));
}

TEST(MountsTest, ViewWithoutParentIsReadOnlyBindOfItsOwnDir) {
  EXPECT_THAT(BuildMounts({Kind::kView, "/r/1/fs", "/r/1/work", {}}),
              ElementsAre(Mount{"bind", "/r/1/fs", {"ro", "rbind"}}));
}

TEST(MountsTest, ViewOfOneLayerIsReadOnlyBindOfIt) {
  EXPECT_THAT(BuildMounts({Kind::kView, "/r/2/fs", "/r/2/work", {"/r/1/fs"}}),
              ElementsAre(Mount{"bind", "/r/1/fs", {"ro", "rbind"}}));
}

TEST(MountsTest, ViewOfSeveralLayersIsOverlayWithoutUpper) {
  EXPECT_THAT(BuildMounts({Kind::kView, "/r/3/fs", "/r/3/work", {"/r/2/fs", "/r/1/fs"}}),
              ElementsAre(Mount{"overlay", "overlay", {"lowerdir=/r/2/fs:/r/1/fs"}}));
}

TEST(MountsTest, ActiveWithParentsIsOverlay) {
  EXPECT_THAT(
      BuildMounts({Kind::kActive, "/r/3/fs", "/r/3/work", {"/r/1/fs"}}),
      ElementsAre(Mount{
          "overlay", "overlay", {"workdir=/r/3/work", "upperdir=/r/3/fs", "lowerdir=/r/1/fs"}}));
  EXPECT_THAT(
      BuildMounts({Kind::kActive, "/r/9/fs", "/r/9/work", {"/r/8/fs", "/r/2/fs", "/r/1/fs"}})
          .front()
          .options.back(),
      "lowerdir=/r/8/fs:/r/2/fs:/r/1/fs");
}

}  // namespace
}  // namespace dadi::snapshotter
