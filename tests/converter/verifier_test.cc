// dadi verify: a converted image (made here by ImageConverter with the real ConvertLayer) is
// compared with its source image; a deliberately different source must be reported entry by
// entry. Also runs the `dadi verify` command for its exit codes.
#include "converter/verifier.h"

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "blockstore/remote/digest.h"
#include "blockstore/remote/manifest.h"
#include "converter/image/image_converter.h"
#include "converter/image/image_reference.h"
#include "converter/image/image_store.h"
#include "converter/layer_converter.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/converter/converter_test_util.h"
#include "tests/support/scratch_dir.h"

namespace dadi::converter {
namespace {

namespace fs = std::filesystem;
using ::testing::Contains;
using ::testing::HasSubstr;
using testing::TarBuilder;

std::vector<std::string> Layers(bool altered) {
  TarBuilder::Meta owned;
  owned.uid = 1000;
  owned.gid = 1000;
  owned.xattrs = {{"user.tag", "one"}};
  TarBuilder l0;
  l0.Dir("etc").File("etc/hello", "hello\n").File("etc/gone", "removed by layer 1\n");
  l0.Dir("home").File("home/u", "user file\n", owned).Symlink("etc/link", "hello");
  l0.Dir("var").Dir("var/cache").File("var/cache/a", "a").File("var/cache/b", "b");
  TarBuilder l1(TarBuilder::Format::kPax, TarBuilder::Compression::kGzip);
  l1.File("etc/hello", altered ? "HELLO\n" : "hello again\n").Whiteout("etc/gone");
  l1.Opaque("var/cache").File("var/cache/c", "c");
  if (!altered) l1.File("etc/only-in-source", "x");
  TarBuilder::Meta exec;
  exec.mode = altered ? 0700 : 0755;
  l1.Dir("bin").File("bin/tool", std::string(200000, 't'), exec);
  if (altered) {
    TarBuilder::Meta other = owned;
    other.xattrs = {{"user.tag", "two"}};
    l1.File("home/u", "user file\n", other);
    l1.Symlink("etc/link", "elsewhere");
  }
  return {l0.Finish(), l1.Finish()};
}

class VerifierTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::WriteOciLayout(dir_.Join("src"), Layers(false));
    testing::WriteOciLayout(dir_.Join("other"), Layers(true));
    fs::create_directories(dir_.Join("work"));
    auto src = image::ParseImageReference("oci:" + dir_.Join("src") + ":v1");
    auto dst = image::ParseImageReference("oci:" + dir_.Join("dst") + ":v1");
    ASSERT_TRUE(src.ok() && dst.ok());
    auto source = image::OpenImageSource(*src, nullptr, dir_.Join("work"));
    ASSERT_TRUE(source.ok()) << source.status();
    auto dest = image::OpenImageDestination(*dst, nullptr, dir_.Join("work"));
    ASSERT_TRUE(dest.ok()) << dest.status();
    image::ConvertOptions o;
    o.layer.vsize = 256 << 20;
    o.store_dir = dir_.Join("store");
    fs::create_directories(o.store_dir);
    o.work_dir = dir_.Join("work");
    image::LayerConverterFn fn =
        [](blockstore::RandomAccessFile& tar, const std::vector<std::string>& lowers,
           const std::string& uuid, const std::string& parent, const std::string& out,
           const image::LayerOptions& lo) -> absl::StatusOr<image::LayerResult> {
      LayerConversionOptions c;
      c.vsize = lo.vsize;
      c.threads = 2;
      auto r = ConvertLayer(tar, lowers, uuid, parent, out, c);
      if (!r.ok()) return r.status();
      return image::LayerResult{r->blob_path, r->digest, r->size, r->uuid};
    };
    image::ImageConverter conv(o, fn, nullptr, nullptr);
    auto sum = conv.Convert(**source, **dest);
    ASSERT_TRUE(sum.ok()) << sum.status();
  }

  absl::StatusOr<VerifyReport> Verify(const std::string& converted, const std::string& source) {
    auto c = image::ParseImageReference(converted);
    auto s = image::ParseImageReference(source);
    if (!c.ok() || !s.ok()) return absl::InvalidArgumentError("reference");
    auto ci = image::OpenImageSource(*c, nullptr, dir_.Join("work"));
    if (!ci.ok()) return ci.status();
    auto si = image::OpenImageSource(*s, nullptr, dir_.Join("work"));
    if (!si.ok()) return si.status();
    VerifyOptions o;
    o.work_dir = dir_.Join("work");
    return VerifyImage(**ci, **si, o);
  }

  testing::ScratchDir dir_{"dadi-verify"};
};

TEST_F(VerifierTest, ConvertedImageMatchesItsSource) {
  auto r = Verify("oci:" + dir_.Join("dst") + ":v1", "oci:" + dir_.Join("src") + ":v1");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->layers, 2);
  EXPECT_GE(r->entries, 10u);
  EXPECT_THAT(r->differences, ::testing::IsEmpty()) << absl::StrJoin(r->differences, "\n");
}

TEST_F(VerifierTest, DifferencesAreListed) {
  auto r = Verify("oci:" + dir_.Join("dst") + ":v1", "oci:" + dir_.Join("other") + ":v1");
  ASSERT_TRUE(r.ok()) << r.status();
  const std::string all = absl::StrJoin(r->differences, "\n");
  EXPECT_THAT(all, HasSubstr("etc/hello: content sha256:"));
  EXPECT_THAT(all, HasSubstr("etc/hello: size 6 (source) != 12 (converted)"));
  EXPECT_THAT(r->differences, Contains("etc/only-in-source: only in the converted image (file)"));
  EXPECT_THAT(r->differences, Contains("bin/tool: mode 100700 (source) != 100755 (converted)"));
  EXPECT_THAT(all, HasSubstr("home/u: xattrs {user.tag=3 bytes"));
  EXPECT_THAT(all, HasSubstr("etc/link: link target elsewhere (source) != hello (converted)"));
  // Whiteouts and the opaque directory are honoured on both sides alike.
  EXPECT_THAT(all, ::testing::Not(HasSubstr("etc/gone")));
  EXPECT_THAT(all, ::testing::Not(HasSubstr("var/cache")));
  EXPECT_EQ(r->differences.size(), 7u) << all;
}

TEST(CompareTreesTest, OnlyInEitherSideAndLimit) {
  FileTree a, b;
  TreeEntry f;
  f.mode = 0100644;
  a["x"] = f;
  b["y"] = f;
  TreeEntry d;
  d.mode = 0040755;
  a["z"] = d;
  b["z"] = f;
  std::vector<std::string> diff = CompareTrees(a, b);
  EXPECT_THAT(diff, ::testing::ElementsAre("x: only in the source (file)",
                                           "y: only in the converted image (file)",
                                           "z: type directory (source) != file (converted)"));
  EXPECT_THAT(CompareTrees(a, b, 1),
              ::testing::ElementsAre("x: only in the source (file)", "... and 2 more differences"));
}

int RunCli(const std::string& args, std::string* out) {
  return testing::RunShell(std::string(DADI_CLI_PATH) + " " + args, out);
}

TEST_F(VerifierTest, CommandExitCodes) {
  std::string out;
  EXPECT_EQ(
      RunCli("verify oci:" + dir_.Join("dst") + ":v1 --source oci:" + dir_.Join("src") + ":v1",
             &out),
      0)
      << out;
  EXPECT_THAT(out, HasSubstr("OK: 2 layers"));
  out.clear();
  EXPECT_EQ(
      RunCli("verify oci:" + dir_.Join("dst") + ":v1 --source oci:" + dir_.Join("other") + ":v1",
             &out),
      1)
      << out;
  EXPECT_THAT(out, HasSubstr("MISMATCH: 7 differences"));
  EXPECT_THAT(out, HasSubstr("bin/tool: mode 100700 (source) != 100755 (converted)"));
  out.clear();
  EXPECT_EQ(
      RunCli("verify oci:" + dir_.Join("nothing") + " --source oci:" + dir_.Join("src"), &out), 1);
  EXPECT_THAT(out, HasSubstr("dadi verify:"));
}

}  // namespace
}  // namespace dadi::converter
