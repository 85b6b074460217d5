// blockstore_bench: prints a table of ratios measured in one run, on this machine.
//  - ZFile compression/decompression throughput (LZ4, ZSTD; 4 KiB and 64 KiB blocks) against
//    the raw library on the same blocks (the ceiling), and compressed size against gzip.
//  - Random 4 KiB reads from a 20-layer LZ4 stack of layer blobs against the same data as one
//    flat file (page cache warm), and index lookups per second at 1k and 1M segments.
#include <fcntl.h>
#include <lz4.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "blockstore/blob/layer_blob.h"
#include "blockstore/file/file.h"
#include "blockstore/lsmt/layer_stack.h"
#include "blockstore/lsmt/sealed_layer_writer.h"
#include "blockstore/lsmt/segment_index.h"
#include "blockstore/lsmt/writable_layer.h"
#include "blockstore/zfile/zfile_reader.h"
#include "blockstore/zfile/zfile_writer.h"

namespace dadi::blockstore {
namespace {

using Clock = std::chrono::steady_clock;

// Runs `fn` repeatedly for at least `min_seconds` (and 3 calls); returns the fastest call's
// seconds. The minimum is robust against other processes sharing the machine.
double TimePerCall(const std::function<void()>& fn, double min_seconds = 0.3) {
  fn();  // warm-up
  double best = 1e30;
  int calls = 0;
  auto start = Clock::now();
  while (calls < 3 || std::chrono::duration<double>(Clock::now() - start).count() < min_seconds) {
    auto t0 = Clock::now();
    fn();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
    ++calls;
  }
  return best;
}

void Check(const absl::Status& s, const char* what) {
  if (!s.ok()) {
    std::fprintf(stderr, "blockstore_bench: %s: %s\n", what, std::string(s.ToString()).c_str());
    std::exit(1);
  }
}

// Disk-like data: runs of random bytes, text and zeros.
std::string DiskLikeData(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string out;
  out.reserve(n);
  static const char* kWords[] = {
      "usr/lib/x86_64-linux-gnu ", "#include <stdio.h>\n", "return 0; ",
      "ELF\x02\x01\x01 ",          "config = true\n",      "{\"a\": 1} "};
  while (out.size() < n) {
    size_t run = 512 + rng() % 16384;
    switch (rng() % 4) {
      case 0: {
        for (size_t i = 0; i < run; i += 8) {
          uint64_t v = rng();
          out.append(reinterpret_cast<const char*>(&v), 8);
        }
        break;
      }
      case 1:
      case 2:
        for (size_t i = 0; i < run;) {
          const char* w = kWords[rng() % 6];
          out += w;
          i += std::strlen(w);
        }
        break;
      default:
        out.append(run, '\0');
    }
  }
  out.resize(n);
  return out;
}

class NullWritableFile final : public WritableFile {
 public:
  absl::Status Append(absl::string_view d) override {
    size_ += d.size();
    return absl::OkStatus();
  }
  uint64_t Size() const override { return size_; }
  absl::Status Sync() override { return absl::OkStatus(); }
  absl::Status Close() override { return absl::OkStatus(); }
  std::string Name() const override { return "null"; }

 private:
  uint64_t size_ = 0;
};

class StringFile final : public WritableFile {
 public:
  absl::Status Append(absl::string_view d) override {
    data.append(d.data(), d.size());
    return absl::OkStatus();
  }
  uint64_t Size() const override { return data.size(); }
  absl::Status Sync() override { return absl::OkStatus(); }
  absl::Status Close() override { return absl::OkStatus(); }
  std::string Name() const override { return "string"; }
  std::string data;
};

std::string Compress(const std::string& data, ZFileWriterOptions o) {
  StringFile out;
  auto w = ZFileWriter::Create(&out, o);
  Check(w.status(), "create writer");
  Check((*w)->Append(data), "append");
  Check((*w)->Close(), "close");
  return std::move(out.data);
}

void CompressionTable() {
  const size_t kSize = 32 << 20;
  const std::string data = DiskLikeData(kSize, 1);
  const double mb = static_cast<double>(kSize) / (1 << 20);
  uLongf gz_len = compressBound(kSize);
  std::string gz(gz_len, '\0');
  compress2(reinterpret_cast<Bytef*>(gz.data()), &gz_len,
            reinterpret_cast<const Bytef*>(data.data()), kSize, 6);
  std::printf("ZFile vs raw library, %zu MiB of disk-like data, one thread\n", kSize >> 20);
  std::printf("  gzip -6 of the same data: %.1f%% of original\n",
              100.0 * static_cast<double>(gz_len) / kSize);
  std::printf("  %-10s %10s %10s %7s | %10s %10s %7s | %8s %9s\n", "format", "comp MB/s",
              "raw MB/s", "ratio", "dec MB/s", "raw MB/s", "ratio", "size", "vs gzip");
  for (ZFileAlgorithm algo : {ZFileAlgorithm::kLz4, ZFileAlgorithm::kZstd}) {
    for (uint32_t bs : {4096u, 65536u}) {
      ZFileWriterOptions o;
      o.algorithm = algo;
      o.block_size = bs;
      // Raw library on the same blocks.
      // Preallocated output slots, so the raw loop pays for compression only.
      const size_t bound = algo == ZFileAlgorithm::kLz4
                               ? static_cast<size_t>(LZ4_compressBound(static_cast<int>(bs)))
                               : ZSTD_compressBound(bs);
      std::vector<std::string> blocks(kSize / bs, std::string(bound, '\0'));
      std::vector<size_t> lengths(blocks.size());
      ZSTD_CCtx* cctx = ZSTD_createCCtx();
      ZSTD_DCtx* dctx = ZSTD_createDCtx();
      auto raw_compress = [&] {
        for (size_t i = 0; i < blocks.size(); ++i) {
          if (algo == ZFileAlgorithm::kLz4) {
            lengths[i] = static_cast<size_t>(
                LZ4_compress_default(data.data() + i * bs, blocks[i].data(), static_cast<int>(bs),
                                     static_cast<int>(bound)));
          } else {
            lengths[i] =
                ZSTD_compressCCtx(cctx, blocks[i].data(), bound, data.data() + i * bs, bs, 0);
          }
        }
      };
      std::string out(bs, '\0');
      auto raw_decompress = [&] {
        for (size_t i = 0; i < blocks.size(); ++i) {
          if (algo == ZFileAlgorithm::kLz4) {
            LZ4_decompress_safe(blocks[i].data(), out.data(), static_cast<int>(lengths[i]),
                                static_cast<int>(bs));
          } else {
            ZSTD_decompressDCtx(dctx, out.data(), bs, blocks[i].data(), lengths[i]);
          }
        }
      };
      double t_raw_c = TimePerCall(raw_compress);
      double t_raw_d = TimePerCall(raw_decompress);
      ZSTD_freeCCtx(cctx);
      ZSTD_freeDCtx(dctx);
      double t_z_c = TimePerCall([&] {
        NullWritableFile null;
        auto w = ZFileWriter::Create(&null, o);
        Check((*w)->Append(data), "append");
        Check((*w)->Close(), "close");
      });
      const std::string z = Compress(data, o);
      std::shared_ptr<const RandomAccessFile> zf = NewMemoryFile(z, "bench");
      std::string buf(1 << 20, '\0');
      double t_z_d = TimePerCall([&] {
        ZFileReaderOptions ro;
        ro.cache_bytes = 1 << 20;  // streaming: the cache does not hold the data
        auto r = ZFileReader::Open(zf, ro);
        Check(r.status(), "open");
        for (uint64_t off = 0; off < kSize; off += buf.size()) {
          Check(PreadExact(**r, off, buf.size(), buf.data(), "read"), "read");
        }
      });
      std::printf("  %-4s %3uK  %10.0f %10.0f %6.2fx | %10.0f %10.0f %6.2fx | %7.1f%% %8.2fx\n",
                  std::string(ZFileAlgorithmName(algo)).c_str(), bs >> 10, mb / t_z_c, mb / t_raw_c,
                  t_raw_c / t_z_c, mb / t_z_d, mb / t_raw_d, t_raw_d / t_z_d,
                  100.0 * static_cast<double>(z.size()) / kSize,
                  static_cast<double>(z.size()) / static_cast<double>(gz_len));
    }
  }
  {
    ZFileWriterOptions o;
    o.threads = 2;
    double t1 = TimePerCall([&] {
      NullWritableFile null;
      auto w = ZFileWriter::Create(&null, ZFileWriterOptions{});
      Check((*w)->Append(data), "append");
      Check((*w)->Close(), "close");
    });
    double t2 = TimePerCall([&] {
      NullWritableFile null;
      auto w = ZFileWriter::Create(&null, o);
      Check((*w)->Append(data), "append");
      Check((*w)->Close(), "close");
    });
    std::printf("  lz4 4K compression with 2 threads: %.0f MB/s (%.2fx one thread)\n", mb / t2,
                t1 / t2);
  }
  std::printf("\n");
}

void StackTable(const std::string& dir) {
  constexpr uint64_t kVirtual = 128 << 20;
  constexpr int kLayers = 20;
  std::mt19937_64 rng(2);
  std::string model = DiskLikeData(kVirtual, 3);  // layer 0 writes all of it
  std::vector<std::unique_ptr<LayerBlob>> blobs;
  std::vector<std::shared_ptr<const SealedLayer>> layers;
  auto cache = std::make_shared<BlockCache>(size_t{4} << 30);
  for (int l = 0; l < kLayers; ++l) {
    std::string d = absl::StrCat(dir, "/d", l), i = absl::StrCat(dir, "/i", l);
    auto layer = WritableLayer::Create(d, i, LayerInfo{kVirtual, absl::StrCat("u", l), "", ""});
    Check(layer.status(), "writable layer");
    if (l == 0) {
      Check((*layer)->Write(0, model), "write");
    } else {
      for (int k = 0; k < 100; ++k) {
        uint64_t off = (rng() % (kVirtual / 4096 - 16)) * 4096;
        uint64_t len = 4096 * (1 + rng() % 16);
        std::string chunk = DiskLikeData(len, rng());
        Check((*layer)->Write(off, chunk), "write");
        model.replace(off, len, chunk);
      }
    }
    StringFile sealed;
    Check((*layer)->Commit(&sealed), "commit");
    StringFile z;
    auto w = ZFileWriter::Create(&z, ZFileWriterOptions{});
    Check((*w)->Append(sealed.data), "compress");
    Check((*w)->Close(), "compress");
    std::string blob_path = absl::StrCat(dir, "/layer", l, ".commit");
    auto out = CreateLocalFile(blob_path);
    Check(out.status(), "create blob");
    Check(WriteLayerBlob(*NewMemoryFile(z.data), &(*w)->final_header(), out->get()), "blob");
    Check((*out)->Close(), "close blob");
    ::unlink(d.c_str());
    ::unlink(i.c_str());
    auto f = OpenLocalFile(blob_path);
    Check(f.status(), "open blob");
    LayerBlobOptions bo;
    bo.zfile.cache = cache;
    auto b = LayerBlob::Open(std::shared_ptr<const RandomAccessFile>(*std::move(f)), bo);
    Check(b.status(), "open blob");
    layers.push_back((*b)->layer());
    blobs.push_back(*std::move(b));
  }
  auto stack = LayerStack::Create(layers);
  Check(stack.status(), "stack");
  std::string flat_path = dir + "/flat.img";
  {
    auto out = CreateLocalFile(flat_path);
    Check(out.status(), "flat");
    Check((*out)->Append(model), "flat");
    Check((*out)->Close(), "flat");
  }
  auto flat = OpenLocalFile(flat_path);
  Check(flat.status(), "flat");
  constexpr int kReads = 20000;
  std::vector<uint64_t> offsets(kReads);
  for (auto& o : offsets) o = (rng() % (kVirtual / 4096)) * 4096;
  std::string buf(4096, '\0');
  // Correctness spot check and warm-up of both page cache and block cache.
  for (uint64_t off = 0; off < kVirtual; off += 4096) {
    Check(PreadExact(**stack, off, 4096, buf.data(), "stack"), "stack read");
    if (std::memcmp(buf.data(), model.data() + off, 4096) != 0) {
      std::fprintf(stderr, "blockstore_bench: stack read mismatch at %llu\n",
                   static_cast<unsigned long long>(off));
      std::exit(1);
    }
    Check(PreadExact(**flat, off, 4096, buf.data(), "flat"), "flat read");
  }
  auto reads = [&](const RandomAccessFile& f) {
    return TimePerCall([&] {
      for (uint64_t off : offsets) Check(PreadExact(f, off, 4096, buf.data(), "read"), "read");
    });
  };
  if (std::getenv("BLOCKSTORE_BENCH_PROFILE_STACK") != nullptr) {
    std::fprintf(stderr, "profiling warm stack reads\n");
    auto until = Clock::now() + std::chrono::seconds(8);
    while (Clock::now() < until) {
      for (uint64_t off : offsets) Check(PreadExact(**stack, off, 4096, buf.data(), "r"), "r");
    }
  }
  double t_flat = reads(**flat);
  double t_stack = reads(**stack);
  // Cold block cache: every read decompresses (compressed bytes from the warm page cache).
  std::vector<std::unique_ptr<LayerBlob>> cold_blobs;
  std::vector<std::shared_ptr<const SealedLayer>> cold_layers;
  for (int l = 0; l < kLayers; ++l) {
    auto f = OpenLocalFile(absl::StrCat(dir, "/layer", l, ".commit"));
    LayerBlobOptions bo;
    bo.zfile.cache_bytes = 64 << 10;
    auto b = LayerBlob::Open(std::shared_ptr<const RandomAccessFile>(*std::move(f)), bo);
    Check(b.status(), "open blob");
    cold_layers.push_back((*b)->layer());
    cold_blobs.push_back(*std::move(b));
  }
  auto cold = LayerStack::Create(cold_layers);
  double t_cold = reads(**cold);
  const double n = kReads;
  std::printf(
      "Random 4 KiB reads, %d-layer LZ4 stack of blobs (%llu MiB virtual, %zu merged "
      "segments) vs flat file, page cache warm, one thread\n",
      kLayers, static_cast<unsigned long long>(kVirtual >> 20), (*stack)->index().size());
  std::printf("  %-44s %12s %10s %9s\n", "reader", "reads/s", "MB/s", "vs flat");
  std::printf("  %-44s %12.0f %10.0f %8.2fx\n", "flat file (pread)", n / t_flat,
              n * 4096 / t_flat / (1 << 20), 1.0);
  std::printf("  %-44s %12.0f %10.0f %8.2fx\n", "20-layer stack, block cache warm", n / t_stack,
              n * 4096 / t_stack / (1 << 20), t_flat / t_stack);
  std::printf("  %-44s %12.0f %10.0f %8.2fx\n", "20-layer stack, block cache cold (64 KiB)",
              n / t_cold, n * 4096 / t_cold / (1 << 20), t_flat / t_cold);
  std::printf("  acceptance (warm stack >= 1/3 of flat): %s\n\n",
              t_flat / t_stack >= 1.0 / 3 ? "PASS" : "FAIL");
}

void IndexTable() {
  std::printf("Index lookups (8-sector reads at random offsets), one thread\n");
  std::printf("  %-36s %14s %10s\n", "index", "lookups/s", "ns/lookup");
  std::mt19937_64 rng(4);
  for (size_t segments : {size_t{1000}, size_t{1000000}}) {
    std::vector<SegmentMapping> v;
    v.reserve(segments);
    uint64_t pos = 0;
    for (size_t i = 0; i < segments; ++i) {
      pos += rng() % 16;  // small holes
      uint32_t len = static_cast<uint32_t>(8 + rng() % 64);
      v.push_back(SegmentMapping{pos, len, 8 + pos, false, 0});
      pos += len;
    }
    auto index = SegmentIndex::FromSorted(std::move(v), "bench");
    Check(index.status(), "index");
    std::vector<uint64_t> offsets(1 << 16);
    for (auto& o : offsets) o = rng() % pos;
    std::vector<SegmentMapping> out;
    double t = TimePerCall([&] {
      for (uint64_t o : offsets) {
        out.clear();
        index->Lookup(o, 8, &out);
      }
    });
    double per = t / offsets.size();
    std::printf("  %-36s %14.0f %10.1f\n", absl::StrCat(segments, " segments").c_str(), 1 / per,
                per * 1e9);
  }
  std::printf("\n");
}

}  // namespace
}  // namespace dadi::blockstore

int main() {
  const char* tmp = std::getenv("TMPDIR");
  std::string dir_template = std::string(tmp != nullptr ? tmp : "/tmp") + "/dadi-bench-XXXXXX";
  std::vector<char> t(dir_template.begin(), dir_template.end());
  t.push_back('\0');
  char* dir = ::mkdtemp(t.data());
  if (dir == nullptr) {
    std::perror("mkdtemp");
    return 1;
  }
  std::printf("blockstore_bench: ratios measured in this run\n\n");
  // BLOCKSTORE_BENCH_ONLY=compression|stack|index runs one table (for profiling).
  const char* only_env = std::getenv("BLOCKSTORE_BENCH_ONLY");
  std::string only = only_env != nullptr ? only_env : "";
  if (only.empty() || only == "compression") dadi::blockstore::CompressionTable();
  if (only.empty() || only == "stack") dadi::blockstore::StackTable(dir);
  if (only.empty() || only == "index") dadi::blockstore::IndexTable();
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return 0;
}
