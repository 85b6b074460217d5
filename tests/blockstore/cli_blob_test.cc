// `dadi blob ...` run as a user would: exit codes, outputs, and the reference blobs.
#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <random>

#include "blockstore/blob/layer_blob.h"
#include "blockstore/file/file.h"
#include "blockstore/lsmt/layer_stack.h"
#include "blockstore/lsmt/writable_layer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/blockstore/test_util.h"
#include "tests/support/scratch_dir.h"

namespace dadi::blockstore {
namespace {

struct Result {
  int code = -1;
  std::string out;
};

// Runs the CLI with `args` (already shell-quoted where needed); captures stdout.
Result Dadi(const std::string& args) {
  Result r;
  std::string cmd = std::string(DADI_CLI_PATH) + " " + args + " 2>/dev/null";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) r.out.append(buf, n);
  int status = ::pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string Data(const std::string& name) { return testing::TestDataPath("overlaybd/" + name); }

TEST(CliBlobTest, CompressDecompressVerifyRoundTrip) {
  testing::ScratchDir dir;
  for (const char* flags : {"", "--algorithm zstd --level 7 --block-size 65536 --threads 2",
                            "--no-verify --block-size 8192"}) {
    std::string z = dir.Join("m.z"), raw = dir.Join("m.raw");
    ASSERT_EQ(
        Dadi(std::string("blob zfile compress ") + flags + " " + Data("mixed.raw") + " " + z).code,
        0)
        << flags;
    EXPECT_EQ(Dadi("blob zfile verify " + z).code, 0);
    ASSERT_EQ(Dadi("blob zfile decompress " + z + " " + raw).code, 0);
    EXPECT_TRUE(testing::ReadFileOrDie(raw) == testing::ReadFileOrDie(Data("mixed.raw")));
  }
}

TEST(CliBlobTest, VerifyFailsOnCorruptBlock) {
  testing::ScratchDir dir;
  std::string bytes = testing::ReadFileOrDie(Data("mixed-lz4-4k.zfile"));
  bytes[2000] ^= 0x10;
  std::string bad = dir.Join("bad.zfile");
  std::ofstream(bad, std::ios::binary) << bytes;
  EXPECT_EQ(Dadi("blob zfile verify " + bad).code, 1);
  EXPECT_EQ(Dadi("blob zfile verify " + dir.Join("missing")).code, 1);
}

TEST(CliBlobTest, InspectJsonDescribesReferenceBlob) {
  Result r = Dadi("blob inspect --json " + Data("l1.commit"));
  ASSERT_EQ(r.code, 0);
  nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["format"], "overlaybd layer blob");
  EXPECT_EQ(j["tar"]["data_offset"], 1536);
  EXPECT_EQ(j["zfile"]["algorithm"], "lz4");
  EXPECT_EQ(j["zfile"]["block_size"], 4096);
  EXPECT_EQ(j["lsmt"]["uuid"], "22222222-2222-2222-2222-222222222222");
  EXPECT_EQ(j["lsmt"]["virtual_size"], uint64_t{1} << 30);
  Result text = Dadi("blob inspect " + Data("mixed-zstd-64k.zfile"));
  ASSERT_EQ(text.code, 0);
  EXPECT_NE(text.out.find("zstd"), std::string::npos);
}

TEST(CliBlobTest, CommitMergeAndExportGiveTheReferenceImage) {
  testing::ScratchDir dir;
  // l1's sealed layer out of its blob, merged with l0 into one layer, exported.
  ASSERT_EQ(Dadi("blob zfile decompress " + Data("l1.commit") + " " + dir.Join("l1.lsmt")).code, 0);
  ASSERT_EQ(Dadi("blob lsmt merge " + dir.Join("merged.lsmt") + " " + Data("l0.commit") + " " +
                 dir.Join("l1.lsmt"))
                .code,
            0);
  ASSERT_EQ(Dadi("blob zfile compress --blob " + dir.Join("merged.lsmt") + " " +
                 dir.Join("merged.commit"))
                .code,
            0);
  ASSERT_EQ(Dadi("blob lsmt export " + dir.Join("flat.img") + " " + dir.Join("merged.commit")).code,
            0);
  auto flat = OpenLocalFile(dir.Join("flat.img"));
  ASSERT_TRUE(flat.ok());
  EXPECT_EQ(testing::Sha256OfFile(**flat),
            "368b64f328a67d037e3b4ae361799cde5e2025cdd0f8e6b2a98ca19b82c537dc");
  Result info = Dadi("blob lsmt info --json " + dir.Join("merged.commit"));
  ASSERT_EQ(info.code, 0);
  EXPECT_EQ(nlohmann::json::parse(info.out)["uuid"], "22222222-2222-2222-2222-222222222222");
}

TEST(CliBlobTest, CommitWritableLayerIntoBlob) {
  testing::ScratchDir dir;
  std::string model(1 << 20, '\0');
  {
    auto layer = WritableLayer::Create(dir.Join("data"), dir.Join("index"),
                                       LayerInfo{1 << 20, "top", "base", "cli"});
    ASSERT_TRUE(layer.ok());
    std::mt19937_64 rng(8);
    for (int i = 0; i < 50; ++i) {
      uint64_t off = (rng() % 2000) * 512;
      std::string d = testing::RandomBytes(512 * (1 + rng() % 20), rng);
      ASSERT_TRUE((*layer)->Write(off, d).ok());
      model.replace(off, d.size(), d);
    }
    ASSERT_TRUE((*layer)->Sync().ok());
  }
  ASSERT_EQ(Dadi("blob lsmt commit --blob --algorithm zstd " + dir.Join("data") + " " +
                 dir.Join("index") + " " + dir.Join("top.commit"))
                .code,
            0);
  auto f = OpenLocalFile(dir.Join("top.commit"));
  ASSERT_TRUE(f.ok());
  auto blob = LayerBlob::Open(std::shared_ptr<const RandomAccessFile>(*std::move(f)));
  ASSERT_TRUE(blob.ok()) << blob.status();
  EXPECT_EQ((*blob)->layer()->trailer().uuid, "top");
  EXPECT_EQ((*blob)->layer()->trailer().parent_uuid, "base");
  auto stack = LayerStack::Create({(*blob)->layer()});
  ASSERT_TRUE(stack.ok());
  std::string all(model.size(), 'x');
  ASSERT_TRUE(PreadExact(**stack, 0, all.size(), all.data(), "all").ok());
  EXPECT_TRUE(all == model);
  // A missing index file is a clean error.
  EXPECT_EQ(
      Dadi("blob lsmt commit " + dir.Join("data") + " " + dir.Join("nope") + " " + dir.Join("x"))
          .code,
      1);
}

}  // namespace
}  // namespace dadi::blockstore
