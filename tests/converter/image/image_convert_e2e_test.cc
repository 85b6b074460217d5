// End to end with the real layer converter: a two-layer OCI image made here is converted to an
// OCI layout; the result's layer blobs, opened as an LSMT stack, hold an ext4 file system that
// e2fsck accepts and that reads back the files of both layers.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "blockstore/file/file.h"
#include "blockstore/remote/digest.h"
#include "blockstore/remote/manifest.h"
#include "converter/block_device.h"
#include "converter/ext4_filesystem.h"
#include "converter/image/image_converter.h"
#include "converter/image/image_reference.h"
#include "converter/image/image_store.h"
#include "converter/layer_converter.h"
#include "nlohmann/json.hpp"
#include "tests/converter/converter_test_util.h"
#include "tests/support/scratch_dir.h"

namespace dadi::converter::image {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr uint64_t kVsize = 256 << 20;

// An OCI layout with one two-layer image tagged v1.
void MakeSourceImage(const std::string& dir) {
  testing::TarBuilder l0;
  l0.Dir("etc").File("etc/hello", "hello\n").File("etc/keep", "kept from layer 0\n");
  testing::TarBuilder l1;
  l1.File("etc/hello", "hello again\n").Dir("bin").File("bin/tool", std::string(100000, 'x'));
  testing::WriteOciLayout(dir, {l0.Finish(), l1.Finish()});
}

// With `one_pass`, each layer in one ConvertLayer call (no staged pipeline).
absl::StatusOr<ConvertSummary> ConvertTo(const testing::ScratchDir& scratch, const std::string& src,
                                         const std::string& dst, const std::string& name,
                                         bool one_pass = false) {
  auto s = ParseImageReference(src);
  auto d = ParseImageReference(dst);
  if (!s.ok() || !d.ok()) return absl::InvalidArgumentError("reference");
  std::string work = scratch.Join("work-" + name);
  fs::create_directories(work);
  auto db = DedupDb::Open(scratch.Join(name + ".db"));
  if (!db.ok()) return db.status();
  auto source = OpenImageSource(*s, nullptr, work);
  if (!source.ok()) return source.status();
  auto dest = OpenImageDestination(*d, nullptr, work);
  if (!dest.ok()) return dest.status();
  ConvertOptions o;
  o.layer.vsize = kVsize;
  o.store_dir = scratch.Join(name + ".blobs");
  o.work_dir = work;
  if (one_pass) {
    LayerConverterFn fn = [](blockstore::RandomAccessFile& tar,
                             const std::vector<std::string>& lowers, const std::string& uuid,
                             const std::string& parent, const std::string& out,
                             const LayerOptions& lo) -> absl::StatusOr<LayerResult> {
      LayerConversionOptions c;
      c.vsize = lo.vsize;
      auto r = ConvertLayer(tar, lowers, uuid, parent, out, c);
      if (!r.ok()) return r.status();
      return LayerResult{r->blob_path, r->digest, r->size, r->uuid};
    };
    ImageConverter conv(o, fn, db->get(), nullptr);
    return conv.Convert(**source, **dest);
  }
  ImageConverter conv(o, DefaultLayerConverter(), db->get(), nullptr);
  auto sum = conv.Convert(**source, **dest);
  // The staged pipeline's sealed files are gone.
  for (const auto& e : fs::recursive_directory_iterator(work)) {
    if (e.path().filename().string().rfind("sealed-", 0) == 0) {
      return absl::InternalError("left behind: " + e.path().string());
    }
  }
  return sum;
}

TEST(ImageConvertEndToEndTest, TwoLayerImageToOciLayout) {
  testing::ScratchDir dir("convert-e2e");
  MakeSourceImage(dir.Join("src"));
  auto sum =
      ConvertTo(dir, "oci:" + dir.Join("src") + ":v1", "oci:" + dir.Join("dst") + ":v1", "a");
  ASSERT_TRUE(sum.ok()) << sum.status();
  EXPECT_EQ(sum->layers, 2);

  // The output manifest names the layer blobs; open them as a stack.
  auto ref = ParseImageReference("oci:" + dir.Join("dst") + ":v1");
  auto out = OpenImageSource(*ref, nullptr, dir.path());
  ASSERT_TRUE(out.ok());
  auto top = (*out)->TopManifest();
  ASSERT_TRUE(top.ok()) << top.status();
  EXPECT_EQ(top->digest, sum->digest);
  auto m = blockstore::ParseImageManifest(top->body);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(m->layers.size(), 2u);
  std::vector<std::string> blobs;
  for (const auto& l : m->layers) {
    std::string path = dir.Join("dst/blobs/sha256/" + l.digest.substr(7));
    auto f = blockstore::OpenLocalFile(path);
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_EQ((*f)->Size(), static_cast<uint64_t>(l.size));
    EXPECT_EQ(*blockstore::Sha256DigestOfFile(**f), l.digest);
    EXPECT_EQ(l.annotations.at(std::string(kOverlaybdDigestAnnotation)), l.digest);
    blobs.push_back(path);
  }
  auto stack = OpenLayerStack(blobs);
  ASSERT_TRUE(stack.ok()) << stack.status();
  ASSERT_EQ((*stack)->Size(), kVsize);

  // Exported flat image: e2fsck clean.
  std::string image = dir.Join("flat.img");
  absl::Status exported = testing::ExportFlat(**stack, image);
  ASSERT_TRUE(exported.ok()) << exported;
  absl::Status fsck = testing::Fsck(image);
  EXPECT_TRUE(fsck.ok()) << fsck;

  // Files of both layers, the upper one winning.
  auto dev = NewCopyOnWriteBlockDevice(*stack);
  auto efs = Ext4Filesystem::Open(dev.get());
  ASSERT_TRUE(efs.ok()) << efs.status();
  auto read = [&](const std::string& path) -> std::string {
    auto ino = (*efs)->LookupPath(path);
    EXPECT_TRUE(ino.ok()) << path << ": " << ino.status();
    if (!ino.ok()) return "";
    auto data = (*efs)->ReadFile(*ino, 0, 1 << 20);
    EXPECT_TRUE(data.ok()) << data.status();
    return data.ok() ? *data : "";
  };
  EXPECT_EQ(read("etc/hello"), "hello again\n");
  EXPECT_EQ(read("etc/keep"), "kept from layer 0\n");
  EXPECT_EQ(read("bin/tool"), std::string(100000, 'x'));

  // Deterministic: a second conversion with a fresh database gives the same image.
  auto again = ConvertTo(dir, "oci:" + dir.Join("src") + ":v1", "oci:" + dir.Join("dst2"), "b");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->digest, sum->digest);
  // The staged pipeline (apply, then compress while the next layer is applied) writes the
  // blobs ConvertLayer writes in one pass.
  auto one_pass =
      ConvertTo(dir, "oci:" + dir.Join("src") + ":v1", "oci:" + dir.Join("dst3"), "c", true);
  ASSERT_TRUE(one_pass.ok()) << one_pass.status();
  EXPECT_EQ(one_pass->digest, sum->digest);
}

}  // namespace
}  // namespace dadi::converter::image
