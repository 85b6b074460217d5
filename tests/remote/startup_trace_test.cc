#include "blockstore/remote/startup_trace.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace dadi::blockstore {
namespace {

TEST(StartupTraceTest, SerializeParseRoundTrip) {
  StartupTrace t;
  t.virtual_size = 64ull << 30;
  t.ranges = {{4096, 131072}, {0, 4096}, {(64ull << 30) - 4096, 4096}};
  const std::string json = SerializeStartupTrace(t);
  EXPECT_EQ(json.rfind(R"({"mediaType":"application/vnd.dadi.startup-trace.v1+json")", 0), 0u)
      << json;
  absl::StatusOr<StartupTrace> back = ParseStartupTrace(json);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->virtual_size, t.virtual_size);
  EXPECT_EQ(back->ranges, t.ranges);  // order kept: first access first
  EXPECT_EQ(SerializeStartupTrace(*back), json);
}

TEST(StartupTraceTest, StoredRangesAndPackRoundTrip) {
  const std::string a = "sha256:" + std::string(64, 'a');
  const std::string b = "sha256:" + std::string(64, 'b');
  StartupTrace t;
  t.virtual_size = 1 << 20;
  t.ranges = {{0, 4096}};
  t.stored = {{b, {8192, 16384}}, {a, {0, 8192}}};
  absl::StatusOr<StartupTrace> back = ParseStartupTrace(SerializeStartupTrace(t));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->stored, t.stored);  // order kept: the pack's order
  EXPECT_TRUE(back->packs.empty());
  EXPECT_EQ(StoredBytes(t.stored), 24576u);

  t.packs = {StartupPackRef{"sha256:" + std::string(64, 'c'), 16384, 1},
             StartupPackRef{"sha256:" + std::string(64, 'd'), 8192, 1}};
  const std::string json = SerializeStartupTrace(t);
  back = ParseStartupTrace(json);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->packs, t.packs);
  EXPECT_EQ(SerializeStartupTrace(*back), json);
}

TEST(StartupTraceTest, FilesRoundTripAndUnsafePathsAreRefused) {
  StartupTrace t;
  t.virtual_size = 1 << 20;
  t.ranges = {{0, 4096}};
  t.files = {{"usr/bin/python3", {{0, 8192}, {65536, 4096}}}, {"etc/ld.so.cache", {{0, 100}}}};
  const std::string json = SerializeStartupTrace(t);
  absl::StatusOr<StartupTrace> back = ParseStartupTrace(json);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->files, t.files);
  EXPECT_EQ(SerializeStartupTrace(*back), json);

  for (const char* bad : {"", "/etc/passwd", "a/../../b", "..", "./a", "a//b", "a/", "a/."}) {
    EXPECT_FALSE(IsSafeRelativePath(bad)) << bad;
    StartupTrace u = t;
    u.files[0].path = bad;
    absl::StatusOr<StartupTrace> parsed = ParseStartupTrace(SerializeStartupTrace(u));
    ASSERT_FALSE(parsed.ok()) << bad;
    EXPECT_NE(parsed.status().message().find("is not a relative path"), absl::string_view::npos)
        << parsed.status();
  }
  EXPECT_FALSE(IsSafeRelativePath(std::string("a\0b", 3)));
  EXPECT_FALSE(IsSafeRelativePath(std::string(kMaxTracedFilePath + 1, 'a')));
  EXPECT_TRUE(IsSafeRelativePath("a/b..c/.d"));
}

TEST(StartupTraceTest, BadBlobsAreRefusedWithTheReason) {
  const std::string head =
      R"({"mediaType":"application/vnd.dadi.startup-trace.v1+json","virtualSize":1048576,)";
  struct Case {
    std::string json;
    std::string why;
  };
  const std::string stored1 =
      R"("ranges":[],"stored":[["sha256:)" + std::string(64, 'a') + R"(",0,4096]])";
  const std::string stored2 = R"("ranges":[],"stored":[["sha256:)" + std::string(64, 'a') +
                              R"(",0,4096],["sha256:)" + std::string(64, 'a') + R"(",8192,4096]])";
  const std::vector<Case> cases = {
      {"", "not JSON"},
      {"[1,2]", "not a JSON object"},
      {R"({"mediaType":"x","virtualSize":1,"ranges":[]})", "mediaType"},
      {R"({"mediaType":"application/vnd.dadi.startup-trace.v1+json","ranges":[]})", "virtualSize"},
      {head + R"("ranges":{}})", "ranges is not an array"},
      {head + R"("ranges":[[1]]})", "range 0 is not"},
      {head + R"("ranges":[[0,-1]]})", "range 0 is not"},
      {head + R"("ranges":[[0,4096],[0,0]]})", "range 1"},
      {head + R"("ranges":[[1048576,1]]})", "outside the disk"},
      {head + R"("ranges":[[1048000,4096]]})", "outside the disk"},
      {head + R"("ranges":[[18446744073709551615,2]]})", "outside the disk"},
      {std::string(kMaxStartupTraceBytes + 1, ' '), "limit"},
      {head + R"("ranges":[],"stored":{}})", "stored is not an array"},
      {head + R"("ranges":[],"files":{}})", "files is not an array"},
      {head + R"("ranges":[],"files":[["a"]]})", "file 0 is not [path, ranges]"},
      {head + R"("ranges":[],"files":[["a",[[0]]]]})", "a range of file 0 is not"},
      {head + R"("ranges":[],"files":[["a",[[1,0]]]]})", "a range of file 0 is empty"},
      {head + R"("ranges":[],"stored":[["sha256:x",0,1]]})", "is not a digest"},
      {head + R"("ranges":[],"stored":[[")" + std::string(64, 'a') + R"(",0,1]]})",
       "is not a digest"},
      {head + R"("ranges":[],"stored":[["sha256:)" + std::string(64, 'a') + R"(",0]]})",
       "stored range 0 is not"},
      {head + R"("ranges":[],"stored":[["sha256:)" + std::string(64, 'a') + R"(",0,0]]})",
       "stored range 0 [0, +0) is empty"},
      {head + R"("ranges":[],"stored":[["sha256:)" + std::string(64, 'a') +
           R"(",18446744073709551615,2]]})",
       "past 2^64"},
      {head + R"("ranges":[],"packs":[{"digest":"sha256:)" + std::string(64, 'a') +
           R"(","size":1,"ranges":1}]})",
       "packs without stored ranges"},
      {head + stored1 + R"(,"packs":[{"digest":"sha256:)" + std::string(64, 'a') +
           R"(","size":4095,"ranges":1}]})",
       "size 4095 is not the 4096 bytes"},
      {head + stored1 + R"(,"packs":[{"digest":"md5:1","size":4096,"ranges":1}]})",
       "digest is not a digest"},
      {head + stored1 + R"(,"packs":{}})", "packs is not a non-empty array"},
      {head + stored1 + R"(,"packs":[]})", "packs is not a non-empty array"},
      {head + stored1 + R"(,"packs":[{"digest":"sha256:)" + std::string(64, 'a') +
           R"(","size":4096,"ranges":2}]})",
       "past the 1 stored ranges"},
      {head + stored2 + R"(,"packs":[{"digest":"sha256:)" + std::string(64, 'a') +
           R"(","size":4096,"ranges":1}]})",
       "the packs hold 1 of the 2 stored ranges"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<StartupTrace> t = ParseStartupTrace(c.json);
    ASSERT_FALSE(t.ok()) << c.json.substr(0, 80);
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(t.status().message().find(c.why), absl::string_view::npos)
        << t.status() << " for " << c.json.substr(0, 80);
  }
}

TEST(StartupTraceTest, RecorderMergesContinuationsAndSkipsRepeats) {
  TraceRecorder r(1 << 20);
  r.Record(8192, 4096);
  r.Record(12288, 8192);  // continues the last range
  r.Record(0, 4096);
  r.Record(8192, 4096);             // inside what is recorded: no news
  r.Record(9000, 100);              // likewise
  r.Record(16384, 8192);            // partly new: recorded whole
  r.Record(1 << 20, 4096);          // past the disk
  r.Record((1 << 20) - 100, 4096);  // clipped to the disk
  r.Record(500, 0);                 // empty
  const std::vector<TraceRange> want = {
      {8192, 12288}, {0, 4096}, {16384, 8192}, {(1 << 20) - 100, 100}};
  EXPECT_EQ(r.trace().ranges, want);
  EXPECT_EQ(r.trace().virtual_size, 1u << 20);
  EXPECT_TRUE(ParseStartupTrace(SerializeStartupTrace(r.trace())).ok());
}

TEST(StartupTraceTest, RecorderIsBounded) {
  TraceRecorder r(uint64_t{1} << 40);
  for (uint64_t i = 0; i < kMaxStartupTraceRanges + 10; ++i) r.Record(i * 8192, 4096);
  EXPECT_EQ(r.trace().ranges.size(), kMaxStartupTraceRanges);
  EXPECT_TRUE(r.full());
  EXPECT_EQ(r.trace().ranges.back().offset, (kMaxStartupTraceRanges - 1) * 8192);
}

}  // namespace
}  // namespace dadi::blockstore
