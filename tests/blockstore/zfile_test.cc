// ZFile writer and reader: round trips over every block size and algorithm, byte-identical
// multi-threaded output, and corrupted or truncated files at every field.
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "blockstore/file/coding.h"
#include "blockstore/file/file_views.h"
#include "blockstore/zfile/crc32c.h"
#include "blockstore/zfile/zfile_reader.h"
#include "blockstore/zfile/zfile_writer.h"
#include "gtest/gtest.h"
#include "tests/blockstore/test_util.h"

namespace dadi::blockstore {
namespace {

std::string Compress(const std::string& data, ZFileWriterOptions o, size_t chunk = 100000) {
  testing::StringWritableFile out;
  auto w = ZFileWriter::Create(&out, o);
  EXPECT_TRUE(w.ok()) << w.status();
  for (size_t i = 0; i < data.size(); i += chunk) {
    EXPECT_TRUE((*w)->Append(absl::string_view(data).substr(i, chunk)).ok());
  }
  EXPECT_TRUE((*w)->Close().ok());
  return out.data();
}

absl::StatusOr<std::unique_ptr<ZFileReader>> OpenBytes(std::string bytes,
                                                       ZFileReaderOptions o = {}) {
  return ZFileReader::Open(std::shared_ptr<const RandomAccessFile>(NewMemoryFile(std::move(bytes))),
                           o);
}

struct RoundTripCase {
  uint32_t block_size;
  ZFileAlgorithm algorithm;
};

class ZFileRoundTripTest : public ::testing::TestWithParam<RoundTripCase> {};

TEST_P(ZFileRoundTripTest, RandomSizesAndReads) {
  const uint32_t bs = GetParam().block_size;
  std::mt19937_64 rng(bs + static_cast<int>(GetParam().algorithm));
  for (size_t size : {size_t{0}, size_t{1}, size_t{bs - 1}, size_t{bs}, size_t{bs + 1},
                      size_t{3 * bs + 17}, size_t{300000}}) {
    std::string data = testing::MixedData(size, static_cast<uint32_t>(size));
    ZFileWriterOptions o;
    o.block_size = bs;
    o.algorithm = GetParam().algorithm;
    o.verify = (size % 2) == 0;
    std::string z = Compress(data, o, 1 + rng() % 50000);
    auto r = OpenBytes(z);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ((*r)->Size(), size);
    EXPECT_EQ((*r)->block_count(), (size + bs - 1) / bs);
    EXPECT_TRUE((*r)->VerifyAll().ok());
    for (int i = 0; i < 50 && size > 0; ++i) {
      uint64_t off = rng() % size;
      size_t n = 1 + rng() % (3 * bs);
      std::string buf(n, '\0');
      auto got = (*r)->Pread(off, n, buf.data());
      ASSERT_TRUE(got.ok()) << got.status();
      size_t want = std::min<size_t>(n, size - off);
      ASSERT_EQ(*got, want);
      ASSERT_EQ(buf.substr(0, want), data.substr(off, want));
    }
    char c;
    auto past = (*r)->Pread(size, 1, &c);
    ASSERT_TRUE(past.ok());
    EXPECT_EQ(*past, 0u);
  }
}

INSTANTIATE_TEST_SUITE_P(AllBlockSizes, ZFileRoundTripTest,
                         ::testing::Values(RoundTripCase{4096, ZFileAlgorithm::kLz4},
                                           RoundTripCase{8192, ZFileAlgorithm::kLz4},
                                           RoundTripCase{16384, ZFileAlgorithm::kLz4},
                                           RoundTripCase{32768, ZFileAlgorithm::kLz4},
                                           RoundTripCase{65536, ZFileAlgorithm::kLz4},
                                           RoundTripCase{4096, ZFileAlgorithm::kZstd},
                                           RoundTripCase{8192, ZFileAlgorithm::kZstd},
                                           RoundTripCase{16384, ZFileAlgorithm::kZstd},
                                           RoundTripCase{32768, ZFileAlgorithm::kZstd},
                                           RoundTripCase{65536, ZFileAlgorithm::kZstd}));

TEST(ZFileWriterTest, ThreadsGiveByteIdenticalOutput) {
  std::string data = testing::MixedData(3 << 20, 5);
  for (ZFileAlgorithm a : {ZFileAlgorithm::kLz4, ZFileAlgorithm::kZstd}) {
    ZFileWriterOptions o;
    o.algorithm = a;
    o.level = a == ZFileAlgorithm::kZstd ? 5 : 0;
    std::string one = Compress(data, o, 12345);
    o.threads = 4;
    EXPECT_EQ(Compress(data, o, 777777), one);
  }
}

TEST(ZFileWriterTest, RejectsBadOptions) {
  testing::StringWritableFile out;
  for (uint32_t bs : {0u, 2048u, 6000u, 131072u}) {
    ZFileWriterOptions o;
    o.block_size = bs;
    EXPECT_EQ(ZFileWriter::Create(&out, o).status().code(), absl::StatusCode::kInvalidArgument);
  }
  ZFileWriterOptions o;
  o.algorithm = ZFileAlgorithm::kZstd;
  o.level = 40;
  EXPECT_EQ(ZFileWriter::Create(&out, o).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ZFileWriterTest, LevelIsRecordedAndHigherLevelsCompressBetter) {
  std::string data = testing::MixedData(1 << 20, 9);
  ZFileWriterOptions o;
  o.algorithm = ZFileAlgorithm::kZstd;
  o.level = 1;
  std::string fast = Compress(data, o);
  o.level = 19;
  std::string slow = Compress(data, o);
  EXPECT_LE(slow.size(), fast.size());
  auto r = OpenBytes(slow);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)->info().level, 19);
}

TEST(ZFileReaderTest, SpanningReadFetchesCompressedBytesOnce) {
  std::string data = testing::MixedData(1 << 20, 3);
  auto counting = std::make_shared<CountingFile>(
      std::shared_ptr<const RandomAccessFile>(NewMemoryFile(Compress(data, {}))));
  auto r = ZFileReader::Open(counting);
  ASSERT_TRUE(r.ok());
  uint64_t before = counting->reads();
  std::string buf(40 * 4096 + 100, '\0');
  ASSERT_TRUE(PreadExact(**r, 5000, buf.size(), buf.data(), "test").ok());
  EXPECT_EQ(buf, data.substr(5000, buf.size()));
  EXPECT_EQ(counting->reads() - before, 1u);
  // The partly read first block is cached now: no more reads.
  ASSERT_TRUE(PreadExact(**r, 6000, 1000, buf.data(), "test").ok());
  EXPECT_EQ(buf.substr(0, 1000), data.substr(6000, 1000));
  EXPECT_EQ(counting->reads() - before, 1u);
  // Blocks a streaming read covered whole went to the caller only: one read, then cached.
  ASSERT_TRUE(PreadExact(**r, 8192 + 10, 100, buf.data(), "test").ok());
  EXPECT_EQ(buf.substr(0, 100), data.substr(8202, 100));
  EXPECT_EQ(counting->reads() - before, 2u);
  ASSERT_TRUE(PreadExact(**r, 8192 + 500, 100, buf.data(), "test").ok());
  EXPECT_EQ(counting->reads() - before, 2u);
}

TEST(ZFileReaderTest, HeaderOverwriteSkipsTrailerRead) {
  std::string data = testing::MixedData(100000, 4);
  testing::StringWritableFile out;
  auto w = ZFileWriter::Create(&out, {});
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->Append(data).ok());
  ASSERT_TRUE((*w)->Close().ok());
  std::string z = out.data();
  std::string h;
  (*w)->final_header().EncodeTo(&h);
  z.replace(0, 512, h);
  auto counting =
      std::make_shared<CountingFile>(std::shared_ptr<const RandomAccessFile>(NewMemoryFile(z)));
  auto r = ZFileReader::Open(counting);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(counting->reads(), 2u);  // header, jump table
  std::string all(data.size(), '\0');
  ASSERT_TRUE(PreadExact(**r, 0, all.size(), all.data(), "all").ok());
  EXPECT_EQ(all, data);
}

TEST(ZFileReaderTest, SharedCacheAndConcurrentReaders) {
  auto cache = std::make_shared<BlockCache>(64 << 10);  // small: forces eviction
  std::string a = testing::MixedData(500000, 10), b = testing::MixedData(500000, 11);
  ZFileReaderOptions o;
  o.cache = cache;
  auto ra = OpenBytes(Compress(a, {}), o);
  auto rb = OpenBytes(Compress(b, {}), o);
  ASSERT_TRUE(ra.ok() && rb.ok());
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(t);
      std::string buf(10000, '\0');
      for (int i = 0; i < 300; ++i) {
        bool first = rng() % 2;
        const std::string& src = first ? a : b;
        const ZFileReader& r = first ? **ra : **rb;
        uint64_t off = rng() % (src.size() - buf.size());
        if (!PreadExact(r, off, buf.size(), buf.data(), "t").ok() ||
            buf != src.substr(off, buf.size())) {
          ++bad;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(bad.load(), 0);
}

// WarmCache decompresses a range's blocks into the cache with one read of their stored bytes;
// reads of the range then need the file no more, even a spanning read that would stream.
TEST(ZFileReaderTest, WarmCacheServesLaterReadsFromMemory) {
  std::string data = testing::MixedData(1 << 20, 4);
  auto fault = std::make_shared<testing::FaultInjectionFile>(
      std::shared_ptr<const RandomAccessFile>(NewMemoryFile(Compress(data, {}))));
  auto r = ZFileReader::Open(fault);
  ASSERT_TRUE(r.ok());
  const int64_t before = fault->reads();
  ASSERT_TRUE((*r)->WarmCache(3 * 4096 + 7, 20 * 4096).ok());
  EXPECT_EQ(fault->reads() - before, 1);
  ASSERT_TRUE((*r)->WarmCache(3 * 4096, 4096).ok());  // cached already: no read
  EXPECT_EQ(fault->reads() - before, 1);
  fault->FailFromRead(fault->reads());
  std::string buf(21 * 4096, '\0');
  ASSERT_TRUE(PreadExact(**r, 3 * 4096, buf.size(), buf.data(), "test").ok());
  EXPECT_EQ(buf, data.substr(3 * 4096, buf.size()));
  // Outside the warmed blocks the file is read (and fails here).
  EXPECT_EQ((*r)->Pread(30 * 4096, 10, buf.data()).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE((*r)->WarmCache(data.size(), 100).ok());  // past the end: nothing
}

TEST(ZFileReaderTest, ReadErrorsPropagate) {
  std::string data = testing::MixedData(100000, 12);
  auto fault = std::make_shared<testing::FaultInjectionFile>(
      std::shared_ptr<const RandomAccessFile>(NewMemoryFile(Compress(data, {}))));
  auto r = ZFileReader::Open(fault);
  ASSERT_TRUE(r.ok());
  fault->FailFromRead(fault->reads());
  char buf[100];
  EXPECT_EQ((*r)->Pread(0, sizeof(buf), buf).status().code(), absl::StatusCode::kUnavailable);
  for (int64_t k = 0; k < 3; ++k) {
    auto f2 = std::make_shared<testing::FaultInjectionFile>(
        std::shared_ptr<const RandomAccessFile>(NewMemoryFile(Compress(data, {}))));
    f2->FailFromRead(k);
    EXPECT_EQ(ZFileReader::Open(f2).status().code(), absl::StatusCode::kUnavailable);
  }
}

// Every single-bit flip in the header, jump table or trailer is detected at open; every flip in a
// block's stored bytes is detected when the block is read.
TEST(ZFileCorruptionTest, BitFlipsAnywhereAreDetected) {
  std::string data = testing::MixedData(5 * 4096 + 100, 13);
  const std::string z = Compress(data, {});
  auto good = OpenBytes(z);
  ASSERT_TRUE(good.ok());
  const uint64_t index_offset = (*good)->info().index_offset;
  std::mt19937_64 rng(14);
  for (size_t pos = 0; pos < z.size(); ++pos) {
    bool metadata = pos < 512 || pos >= index_offset;
    if (!metadata && rng() % 8 != 0) continue;  // sample the block bytes
    const int bit = static_cast<int>(rng() % 8);
    // Clearing the digest flag (flags bit 4) turns the digest check off by design.
    if ((pos == 32 || pos == z.size() - 512 + 32) && bit == 4) continue;
    std::string bad = z;
    bad[pos] ^= static_cast<char>(1 << bit);
    auto r = OpenBytes(bad);
    if (metadata) {
      EXPECT_FALSE(r.ok()) << "flip at " << pos;
      if (!r.ok()) {
        EXPECT_TRUE(r.status().code() == absl::StatusCode::kDataLoss ||
                    r.status().code() == absl::StatusCode::kUnimplemented)
            << r.status();
        EXPECT_NE(r.status().message().find("memory"), std::string::npos) << r.status();
      }
      continue;
    }
    ASSERT_TRUE(r.ok()) << r.status();
    std::string all(data.size(), '\0');
    auto got = (*r)->Pread(0, all.size(), all.data());
    EXPECT_EQ(got.status().code(), absl::StatusCode::kDataLoss) << "flip at " << pos;
    EXPECT_NE(got.status().message().find("CRC"), std::string::npos) << got.status();
  }
}

TEST(ZFileCorruptionTest, WithoutBlockCrcsBadBlocksFailCleanly) {
  std::string data = testing::MixedData(8 * 4096, 15);
  ZFileWriterOptions o;
  o.verify = false;
  const std::string z = Compress(data, o);
  for (size_t pos = 512; pos < z.size() - 512 - 32; pos += 7) {
    std::string bad = z;
    bad[pos] = static_cast<char>(bad[pos] + 1 + pos % 200);
    auto r = OpenBytes(bad);
    if (!r.ok()) continue;
    std::string all(data.size(), '\0');
    (void)(*r)->Pread(0, all.size(), all.data());  // must not crash; result may be wrong data
  }
}

TEST(ZFileCorruptionTest, EveryTruncationFailsAtOpen) {
  const std::string z = Compress(testing::MixedData(3 * 4096, 16), {});
  for (size_t len = 0; len < z.size(); ++len) {
    auto r = OpenBytes(z.substr(0, len));
    EXPECT_FALSE(r.ok()) << "length " << len;
  }
}

// Rewrites the trailer with a field changed and a valid digest, to reach the checks behind it.
std::string WithTrailer(const std::string& z, const std::function<void(ZFileHeader&)>& change) {
  ZFileHeader t;
  EXPECT_TRUE(t.DecodeFrom(absl::string_view(z).substr(z.size() - 512), "z").ok());
  change(t);
  std::string enc;
  t.EncodeTo(&enc);
  return z.substr(0, z.size() - 512) + enc;
}

TEST(ZFileCorruptionTest, FieldsWithValidDigestAreChecked) {
  const std::string z = Compress(testing::MixedData(10 * 4096, 17), {});
  struct Case {
    const char* what;
    std::function<void(ZFileHeader&)> change;
    absl::StatusCode code;
  };
  std::vector<Case> cases = {
      {"algo", [](ZFileHeader& t) { t.algorithm = static_cast<ZFileAlgorithm>(3); },
       absl::StatusCode::kUnimplemented},
      {"block_size", [](ZFileHeader& t) { t.block_size = 3000; }, absl::StatusCode::kDataLoss},
      {"block_size", [](ZFileHeader& t) { t.block_size = 1 << 20; }, absl::StatusCode::kDataLoss},
      {"index_size", [](ZFileHeader& t) { t.index_size = uint64_t{1} << 60; },
       absl::StatusCode::kDataLoss},
      {"index_size", [](ZFileHeader& t) { t.index_size -= 1; }, absl::StatusCode::kDataLoss},
      {"index_offset", [](ZFileHeader& t) { t.index_offset = ~uint64_t{0} - 3; },
       absl::StatusCode::kDataLoss},
      {"original_file_size", [](ZFileHeader& t) { t.original_file_size *= 3; },
       absl::StatusCode::kDataLoss},
      {"index_crc", [](ZFileHeader& t) { t.index_crc ^= 1; }, absl::StatusCode::kDataLoss},
      {"dict_size", [](ZFileHeader& t) { t.dict_size = 100; }, absl::StatusCode::kUnimplemented},
      {"flags", [](ZFileHeader& t) { t.flags |= ZFileHeader::kFlagIsHeader; },
       absl::StatusCode::kDataLoss},
      {"flags", [](ZFileHeader& t) { t.flags |= ZFileHeader::kFlagIndexCompressed; },
       absl::StatusCode::kUnimplemented},
  };
  for (const Case& c : cases) {
    auto r = OpenBytes(WithTrailer(z, c.change));
    EXPECT_EQ(r.status().code(), c.code) << c.what << ": " << r.status();
  }
}

TEST(ZFileCorruptionTest, JumpTableEntriesAreBounded) {
  std::string z = Compress(testing::MixedData(10 * 4096, 18), {});
  auto good = OpenBytes(z);
  ASSERT_TRUE(good.ok());
  uint64_t io = (*good)->info().index_offset;
  // Swap two entries' lengths (sum unchanged) and fix the jump table CRC: blocks then fail CRC.
  std::string bad = z;
  uint32_t a = DecodeFixed32(bad.data() + io), b = DecodeFixed32(bad.data() + io + 4);
  if (a != b) {
    EncodeFixed32(bad.data() + io, b);
    EncodeFixed32(bad.data() + io + 4, a);
    uint32_t crc = crc32c::Value(bad.data() + io, 4 * (*good)->block_count());
    bad = WithTrailer(bad, [&](ZFileHeader& t) { t.index_crc = crc; });
    auto r = OpenBytes(bad);
    ASSERT_TRUE(r.ok());
    char buf[4096];
    EXPECT_EQ((*r)->Pread(0, sizeof(buf), buf).status().code(), absl::StatusCode::kDataLoss);
  }
  // An entry of 0 or a huge one is refused at open.
  for (uint32_t v : {0u, 1u << 30}) {
    std::string bad2 = z;
    EncodeFixed32(bad2.data() + io, v);
    uint32_t crc = crc32c::Value(bad2.data() + io, 4 * (*good)->block_count());
    bad2 = WithTrailer(bad2, [&](ZFileHeader& t) { t.index_crc = crc; });
    EXPECT_EQ(OpenBytes(bad2).status().code(), absl::StatusCode::kDataLoss);
  }
}

// A bad copy of a block (a node cache unit gone bad): the reader invalidates the block's stored
// bytes, rereads them once, and returns right bytes or DATA_LOSS — never wrong bytes.
class ZFileIntegrityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    data_ = testing::MixedData(8 * 4096 + 100, 19);
    z_ = Compress(data_, {});
    auto good = OpenBytes(z_);
    ASSERT_TRUE(good.ok()) << good.status();
    start_ = ZFileHeader::kEncodedLength;
    for (uint64_t k = 0; k < kBlock; ++k) start_ += (*good)->stored_block_length(k);
    len_ = (*good)->stored_block_length(kBlock);
  }
  // A reader over z_ whose byte in the middle of block kBlock is flipped `times` times.
  std::unique_ptr<ZFileReader> OpenCorrupted(int times) {
    bad_ = std::make_shared<testing::CorruptingFile>(
        std::shared_ptr<const RandomAccessFile>(NewMemoryFile(z_)), start_ + len_ / 2, times);
    auto r = ZFileReader::Open(bad_);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *std::move(r) : nullptr;
  }

  static constexpr uint64_t kBlock = 2;
  std::string data_, z_;
  uint64_t start_ = 0;
  uint32_t len_ = 0;
  std::shared_ptr<testing::CorruptingFile> bad_;
};

TEST_F(ZFileIntegrityTest, BadCopyIsRefetchedOnceAndTheReadSucceeds) {
  // A read inside the block (decoded into the cache), a read spanning every block (decoded into
  // the caller's buffer), and VerifyAll.
  enum Shape { kInside, kSpanning, kVerifyAll };
  for (Shape shape : {kInside, kSpanning, kVerifyAll}) {
    SCOPED_TRACE(shape);
    std::unique_ptr<ZFileReader> r = OpenCorrupted(1);
    ASSERT_NE(r, nullptr);
    const int64_t reads = bad_->reads();
    if (shape == kVerifyAll) {
      EXPECT_TRUE(r->VerifyAll().ok());
    } else {
      const uint64_t off = shape == kInside ? kBlock * 4096 + 10 : 0;
      const size_t n = shape == kInside ? 100 : data_.size();
      std::string buf(n, '\0');
      ASSERT_TRUE(PreadExact(*r, off, n, buf.data(), "test").ok());
      EXPECT_EQ(buf, data_.substr(off, n));
    }
    EXPECT_EQ(bad_->corrupted(), 1);
    EXPECT_EQ(bad_->invalidations(), 1);
    EXPECT_EQ(bad_->last_invalidated_offset(), start_);
    EXPECT_EQ(bad_->last_invalidated_length(), len_);
    EXPECT_EQ(bad_->reads() - reads, 2);  // the read, and one reread of the block
    EXPECT_EQ(r->refetched_blocks(), 1u);
  }
}

TEST_F(ZFileIntegrityTest, StillBadAfterRefetchIsDataLossNeverWrongBytes) {
  std::unique_ptr<ZFileReader> r = OpenCorrupted(-1);
  ASSERT_NE(r, nullptr);
  for (int attempt = 0; attempt < 2; ++attempt) {  // nothing wrong was cached by the first
    const int64_t reads = bad_->reads();
    std::string buf(data_.size(), '\0');
    absl::StatusOr<size_t> got = r->Pread(0, buf.size(), buf.data());
    ASSERT_EQ(got.status().code(), absl::StatusCode::kDataLoss) << got.status();
    const std::string msg(got.status().message());
    EXPECT_NE(msg.find("memory"), std::string::npos) << msg;
    EXPECT_NE(msg.find(absl::StrCat("block ", kBlock, " (at offset ", start_, ")")),
              std::string::npos)
        << msg;
    EXPECT_NE(msg.find("CRC"), std::string::npos) << msg;
    EXPECT_NE(msg.find("again after refetching"), std::string::npos) << msg;
    EXPECT_EQ(bad_->reads() - reads, 2);
    EXPECT_EQ(bad_->invalidations(), attempt + 1);
  }
  EXPECT_EQ(r->VerifyAll().code(), absl::StatusCode::kDataLoss);
  // Other blocks read fine.
  std::string buf(4096, '\0');
  ASSERT_TRUE(PreadExact(*r, 0, buf.size(), buf.data(), "test").ok());
  EXPECT_EQ(buf, data_.substr(0, buf.size()));
}

TEST_F(ZFileIntegrityTest, FileThatCannotRefetchIsNotReread) {
  std::string z = z_;
  z[start_ + len_ / 2] ^= 0x10;
  auto counting =
      std::make_shared<CountingFile>(std::shared_ptr<const RandomAccessFile>(NewMemoryFile(z)));
  auto r = ZFileReader::Open(counting);
  ASSERT_TRUE(r.ok()) << r.status();
  const uint64_t reads = counting->reads();
  char buf[100];
  absl::StatusOr<size_t> got = (*r)->Pread(kBlock * 4096, sizeof(buf), buf);
  EXPECT_EQ(got.status().code(), absl::StatusCode::kDataLoss) << got.status();
  EXPECT_EQ(got.status().message().find("again"), std::string::npos) << got.status();
  EXPECT_EQ(counting->reads() - reads, 1u);
  EXPECT_EQ((*r)->refetched_blocks(), 0u);
}

// Slice, counting and prefetched views forward Invalidate; a prefetched view forgets the bad copy
// it holds in memory.
TEST_F(ZFileIntegrityTest, ViewsForwardInvalidate) {
  constexpr uint64_t kPrefix = 1000;
  auto bad = std::make_shared<testing::CorruptingFile>(
      std::shared_ptr<const RandomAccessFile>(NewMemoryFile(std::string(kPrefix, 'x') + z_)),
      kPrefix + start_ + len_ / 2, 1);
  auto counting = std::make_shared<CountingFile>(bad);
  auto prefetched = std::make_shared<PrefetchedFile>(counting);
  ASSERT_TRUE(prefetched->Preload(0, kPrefix + z_.size()).ok());
  EXPECT_EQ(bad->corrupted(), 1);  // the prefetched copy is the bad one
  auto slice = NewSliceFile(prefetched, kPrefix, z_.size());
  ASSERT_TRUE(slice.ok()) << slice.status();
  auto r = ZFileReader::Open(*slice);
  ASSERT_TRUE(r.ok()) << r.status();
  std::string all(data_.size(), '\0');
  ASSERT_TRUE(PreadExact(**r, 0, all.size(), all.data(), "test").ok());
  EXPECT_EQ(all, data_);
  EXPECT_EQ(bad->invalidations(), 1);
  EXPECT_EQ(bad->last_invalidated_offset(), kPrefix + start_);
  EXPECT_EQ(bad->last_invalidated_length(), len_);
  EXPECT_EQ((*r)->refetched_blocks(), 1u);
  // A range past the window has nothing to drop there; files without a cache cannot refetch.
  EXPECT_TRUE((*slice)->Invalidate(z_.size() + 5, 10).ok());
  EXPECT_EQ(bad->invalidations(), 1);
  EXPECT_EQ(NewMemoryFile("abc")->Invalidate(0, 3).code(), absl::StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace dadi::blockstore
