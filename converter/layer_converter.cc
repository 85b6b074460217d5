#include "converter/layer_converter.h"

#include <fcntl.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "blockstore/blob/layer_blob.h"
#include "blockstore/blob/layer_blob_writer.h"
#include "blockstore/file/unique_fd.h"
#include "blockstore/lsmt/layer_stack.h"
#include "blockstore/remote/digest.h"
#include "converter/ext4_filesystem.h"
#include "converter/tar_applier.h"

namespace dadi::converter {
namespace {

// What overlaybd writes as the parent of a bottom layer.
constexpr char kZeroUuid[] = "00000000-0000-0000-0000-000000000000";

absl::Status Errno(absl::string_view what, absl::string_view path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

// A private directory removed (with its content) on destruction, so a failed conversion
// leaves nothing behind.
class WorkDir {
 public:
  static absl::StatusOr<WorkDir> Create(const std::string& out_path) {
    std::string tmpl = absl::StrCat(out_path, ".work-XXXXXX");
    if (::mkdtemp(tmpl.data()) == nullptr) return Errno("mkdtemp", tmpl);
    return WorkDir(tmpl);
  }
  WorkDir(WorkDir&& o) noexcept : path_(std::move(o.path_)) { o.path_.clear(); }
  WorkDir& operator=(WorkDir&&) = delete;
  ~WorkDir() {
    if (path_.empty()) return;
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string Join(absl::string_view name) const { return absl::StrCat(path_, "/", name); }

 private:
  explicit WorkDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

absl::StatusOr<blockstore::ZFileAlgorithm> ParseAlgorithm(const std::string& name) {
  if (name == "lz4") return blockstore::ZFileAlgorithm::kLz4;
  if (name == "zstd") return blockstore::ZFileAlgorithm::kZstd;
  return absl::InvalidArgumentError(
      absl::StrCat("compression algorithm \"", name, "\": want lz4 or zstd"));
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::array<uint8_t, 16> DigestBytes(absl::string_view seed) {
  std::string hex = blockstore::Sha256Digest(seed).substr(7);
  std::array<uint8_t, 16> out{};
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = static_cast<uint8_t>(HexValue(hex[2 * i]) * 16 + HexValue(hex[2 * i + 1]));
  }
  return out;
}

double ProcessCpuSeconds() {
  struct timespec ts;
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

absl::Status FsyncDir(const std::string& path) {
  std::filesystem::path parent = std::filesystem::path(path).parent_path();
  const std::string dir = parent.empty() ? std::filesystem::path(".").string() : parent.string();
  blockstore::UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return Errno("open", dir);
  if (::fsync(fd.get()) != 0) return Errno("fsync", dir);
  return absl::OkStatus();
}

// Copy-on-write in memory over a read-only file.
class CopyOnWriteBlockDevice final : public BlockDevice {
 public:
  static constexpr uint64_t kPage = 4096;
  explicit CopyOnWriteBlockDevice(std::shared_ptr<const blockstore::RandomAccessFile> file)
      : file_(std::move(file)), size_(file_->Size() / kSectorSize * kSectorSize) {}
  uint64_t Size() const override { return size_; }
  absl::Status Pread(uint64_t offset, size_t n, char* buf) override {
    if (absl::Status s = CheckRange(offset, n); !s.ok()) return s;
    if (n == 0) return absl::OkStatus();
    if (absl::Status s = blockstore::PreadExact(*file_, offset, n, buf, "device read"); !s.ok()) {
      return s;
    }
    if (pages_.empty()) return absl::OkStatus();
    for (uint64_t p = offset / kPage; p * kPage < offset + n; ++p) {
      auto it = pages_.find(p);
      if (it == pages_.end()) continue;
      uint64_t from = std::max(offset, p * kPage), to = std::min(offset + n, (p + 1) * kPage);
      std::memcpy(buf + (from - offset), it->second.get() + (from - p * kPage), to - from);
    }
    return absl::OkStatus();
  }
  absl::Status Pwrite(uint64_t offset, absl::string_view data) override {
    if (absl::Status s = CheckRange(offset, data.size()); !s.ok()) return s;
    const uint64_t end = offset + data.size();
    for (uint64_t p = offset / kPage; p * kPage < end; ++p) {
      auto it = pages_.find(p);
      if (it == pages_.end()) {
        // Not copied yet: its current bytes are the file's.
        std::unique_ptr<char[]> fresh(new char[kPage]);
        std::memset(fresh.get(), 0, kPage);
        size_t len = static_cast<size_t>(std::min(kPage, size_ - p * kPage));
        if (absl::Status s =
                blockstore::PreadExact(*file_, p * kPage, len, fresh.get(), "device read");
            !s.ok()) {
          return s;
        }
        it = pages_.emplace(p, std::move(fresh)).first;
      }
      char* page = it->second.get();
      uint64_t from = std::max(offset, p * kPage), to = std::min(end, (p + 1) * kPage);
      std::memcpy(page + (from - p * kPage), data.data() + (from - offset), to - from);
    }
    return absl::OkStatus();
  }
  absl::Status Flush() override { return absl::OkStatus(); }
  std::string Name() const override { return file_->Name(); }

 private:
  absl::Status CheckRange(uint64_t offset, size_t n) const {
    if (offset % kSectorSize != 0 || n % kSectorSize != 0 || offset > size_ || n > size_ - offset) {
      return absl::OutOfRangeError(absl::StrCat("I/O of ", n, " bytes at ", offset, " on ", Name(),
                                                " is unaligned or out of range"));
    }
    return absl::OkStatus();
  }
  std::shared_ptr<const blockstore::RandomAccessFile> file_;
  uint64_t size_;
  absl::flat_hash_map<uint64_t, std::unique_ptr<char[]>> pages_;
};

}  // namespace

std::array<uint8_t, 16> Ext4UuidFor(const std::string& layer_uuid) {
  // The layer uuid's own 16 bytes when it is a uuid text, else bytes of its hash.
  std::array<uint8_t, 16> out{};
  size_t k = 0;
  for (size_t i = 0; i < layer_uuid.size(); ++i) {
    if (layer_uuid[i] == '-') continue;
    int hi = HexValue(layer_uuid[i]);
    int lo = i + 1 < layer_uuid.size() ? HexValue(layer_uuid[i + 1]) : -1;
    if (hi < 0 || lo < 0 || k == out.size())
      return DigestBytes(absl::StrCat("dadi ext4 uuid\n", layer_uuid));
    out[k++] = static_cast<uint8_t>(hi * 16 + lo);
    ++i;
  }
  if (k != out.size()) return DigestBytes(absl::StrCat("dadi ext4 uuid\n", layer_uuid));
  return out;
}

std::array<uint8_t, 16> Ext4HashSeedFor(const std::string& layer_uuid) {
  return DigestBytes(absl::StrCat("dadi ext4 hash seed\n", layer_uuid));
}

LsmtBlockDevice::LsmtBlockDevice(std::shared_ptr<const blockstore::RandomAccessFile> lower,
                                 blockstore::WritableLayer* top)
    : top_(top), stack_(std::move(lower), top) {}

uint64_t LsmtBlockDevice::Size() const { return top_->virtual_size(); }

absl::Status LsmtBlockDevice::Pread(uint64_t offset, size_t n, char* buf) {
  if (offset % kSectorSize != 0 || n % kSectorSize != 0 || offset > Size() || n > Size() - offset) {
    return absl::OutOfRangeError(absl::StrCat("read of ", n, " bytes at ", offset, " on ", Name(),
                                              " is unaligned or out of range"));
  }
  return blockstore::PreadExact(stack_, offset, n, buf, "LSMT device read");
}

absl::Status LsmtBlockDevice::Pwrite(uint64_t offset, absl::string_view data) {
  if (offset % kSectorSize != 0 || data.size() % kSectorSize != 0 || offset > Size() ||
      data.size() > Size() - offset) {
    return absl::OutOfRangeError(absl::StrCat("write of ", data.size(), " bytes at ", offset,
                                              " on ", Name(), " is unaligned or out of range"));
  }
  return top_->Write(offset, data);
}

// The writable layer is committed from its in-memory index; nothing to make durable here (the
// blob is fsynced when written).
absl::Status LsmtBlockDevice::Flush() { return absl::OkStatus(); }

std::string LsmtBlockDevice::Name() const { return absl::StrCat("LSMT layer ", top_->info().uuid); }

std::unique_ptr<BlockDevice> NewCopyOnWriteBlockDevice(
    std::shared_ptr<const blockstore::RandomAccessFile> file) {
  return std::make_unique<CopyOnWriteBlockDevice>(std::move(file));
}

absl::StatusOr<std::shared_ptr<const blockstore::RandomAccessFile>> OpenLayerStack(
    const std::vector<std::string>& blob_paths) {
  std::vector<std::shared_ptr<const blockstore::SealedLayer>> layers;
  for (const std::string& path : blob_paths) {
    auto file = blockstore::OpenLocalFile(path);
    if (!file.ok()) return file.status();
    auto blob = blockstore::LayerBlob::OpenAny(
        std::shared_ptr<const blockstore::RandomAccessFile>(std::move(*file)));
    if (!blob.ok()) return blob.status();
    layers.push_back((*blob)->layer());
  }
  auto stack = blockstore::LayerStack::Create(std::move(layers));
  if (!stack.ok()) return stack.status();
  return std::shared_ptr<const blockstore::RandomAccessFile>(*std::move(stack));
}

namespace {

absl::StatusOr<blockstore::ZFileWriterOptions> ZFileOptionsFor(
    const LayerConversionOptions& options) {
  auto algorithm = ParseAlgorithm(options.algorithm);
  if (!algorithm.ok()) return algorithm.status();
  blockstore::ZFileWriterOptions zopts;
  zopts.algorithm = *algorithm;
  zopts.level = options.level;
  zopts.block_size = options.block_size;
  zopts.verify = true;
  zopts.threads = options.threads > 0
                      ? options.threads
                      : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  return zopts;
}

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// The tar applied to the ext4 on a writable layer over the lower stack; the writable layer's
// files live in `work`.
struct AppliedWritableLayer {
  WorkDir work;
  std::unique_ptr<blockstore::WritableLayer> layer;
};

absl::StatusOr<AppliedWritableLayer> ApplyToWritableLayer(
    blockstore::RandomAccessFile& tar, const std::vector<std::string>& lower_blob_paths,
    const std::string& uuid, const std::string& parent_uuid, const std::string& work_base,
    const LayerConversionOptions& options) {
  if (uuid.empty() || uuid.size() > 36 || parent_uuid.size() > 36) {
    return absl::InvalidArgumentError(absl::StrCat("layer uuid \"", uuid, "\" / parent \"",
                                                   parent_uuid, "\": want 1..36 characters"));
  }
  std::shared_ptr<const blockstore::RandomAccessFile> lower;
  uint64_t vsize = options.vsize;
  if (!lower_blob_paths.empty()) {
    auto stack = OpenLayerStack(lower_blob_paths);
    if (!stack.ok()) return stack.status();
    lower = *std::move(stack);
    vsize = lower->Size();
  }
  if (vsize == 0 || vsize % 4096 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("virtual size ", vsize, " is not a positive multiple of 4096"));
  }
  auto work = WorkDir::Create(work_base);
  if (!work.ok()) return work.status();
  blockstore::LayerInfo info;
  info.virtual_size = vsize;
  info.uuid = uuid;
  info.parent_uuid = parent_uuid.empty() ? kZeroUuid : parent_uuid;
  auto layer = blockstore::WritableLayer::Create(work->Join("data"), work->Join("index"), info);
  if (!layer.ok()) return layer.status();

  LsmtBlockDevice device(lower, layer->get());
  std::unique_ptr<Ext4Filesystem> fs;
  if (lower == nullptr) {
    Ext4Options eo;
    eo.uuid = Ext4UuidFor(uuid);
    eo.hash_seed = Ext4HashSeedFor(uuid);
    auto created = Ext4Filesystem::Create(&device, eo);
    if (!created.ok()) return created.status();
    fs = *std::move(created);
  } else {
    auto opened = Ext4Filesystem::Open(&device);
    if (!opened.ok()) return opened.status();
    fs = *std::move(opened);
  }
  ApplyOptions ao;
  ao.layer_name = tar.Name();
  auto applied = ApplyTarFile(*fs, tar, ao);
  if (!applied.ok()) return applied.status();
  if (absl::Status s = fs->Close(); !s.ok()) return s;
  return AppliedWritableLayer{*std::move(work), *std::move(layer)};
}

// The sha256 of the finished blob at `tmp_blob`, then the blob renamed to `out_path`. The
// envelope's head and the ZFile header are patched at Close, so the hash is read afterwards
// (the blob is still in the page cache).
absl::StatusOr<ConvertedLayer> DigestAndPlace(const std::string& tmp_blob, const std::string& uuid,
                                              const std::string& out_path,
                                              LayerConversionTimings* timings) {
  Clock::time_point t0 = Clock::now();
  double c0 = ProcessCpuSeconds();
  auto blob_file = blockstore::OpenLocalFile(tmp_blob);
  if (!blob_file.ok()) return blob_file.status();
  auto digest = blockstore::Sha256DigestOfFile(**blob_file);
  if (!digest.ok()) return digest.status();
  timings->digest = Since(t0);
  timings->digest_cpu = ProcessCpuSeconds() - c0;
  ConvertedLayer out;
  out.size = (*blob_file)->Size();
  out.digest = *digest;
  out.uuid = uuid;
  out.blob_path = out_path;
  blob_file->reset();
  if (::rename(tmp_blob.c_str(), out_path.c_str()) != 0) return Errno("rename to", out_path);
  if (absl::Status s = FsyncDir(out_path); !s.ok()) return s;
  return out;
}

// The end of a layer's compression: the commit's timings (it started at `t0`, with `c0` CPU
// seconds), then DigestAndPlace; on success the timings go to `report` (when given).
absl::StatusOr<ConvertedLayer> FinishBlob(const std::string& tmp_blob, const std::string& uuid,
                                          const std::string& out_path, Clock::time_point t0,
                                          double c0, LayerConversionTimings& timings,
                                          LayerConversionTimings* report) {
  timings.commit = Since(t0);
  timings.commit_cpu = ProcessCpuSeconds() - c0;
  auto out = DigestAndPlace(tmp_blob, uuid, out_path, &timings);
  timings.compress_end = Clock::now();
  if (out.ok() && report != nullptr) *report = timings;
  return out;
}

// Appends in 1 MiB writes: the commit appends segment by segment, many of them 4 KiB.
class BufferedWritableFile final : public blockstore::WritableFile {
 public:
  static constexpr size_t kBuffer = 1 << 20;
  explicit BufferedWritableFile(std::unique_ptr<blockstore::WritableFile> file)
      : file_(std::move(file)) {
    buf_.reserve(kBuffer);
  }
  absl::Status Append(absl::string_view data) override {
    size_ += data.size();
    if (buf_.size() + data.size() > kBuffer) {
      if (absl::Status s = Drain(); !s.ok()) return s;
    }
    if (data.size() >= kBuffer) return file_->Append(data);
    buf_.append(data.data(), data.size());
    return absl::OkStatus();
  }
  uint64_t Size() const override { return size_; }
  absl::Status Sync() override {
    if (absl::Status s = Drain(); !s.ok()) return s;
    return file_->Sync();
  }
  absl::Status Close() override {
    if (absl::Status s = Drain(); !s.ok()) return s;
    return file_->Close();
  }
  std::string Name() const override { return file_->Name(); }

 private:
  absl::Status Drain() {
    if (buf_.empty()) return absl::OkStatus();
    absl::Status s = file_->Append(buf_);
    buf_.clear();
    return s;
  }
  std::unique_ptr<blockstore::WritableFile> file_;
  std::string buf_;
  uint64_t size_ = 0;
};

}  // namespace

absl::StatusOr<ConvertedLayer> ConvertLayer(blockstore::RandomAccessFile& tar,
                                            const std::vector<std::string>& lower_blob_paths,
                                            const std::string& uuid, const std::string& parent_uuid,
                                            const std::string& out_path,
                                            const LayerConversionOptions& options) {
  auto zopts = ZFileOptionsFor(options);
  if (!zopts.ok()) return zopts.status();
  LayerConversionTimings timings;
  Clock::time_point t0 = Clock::now();
  double c0 = ProcessCpuSeconds();
  timings.apply_start = t0;
  auto applied = ApplyToWritableLayer(tar, lower_blob_paths, uuid, parent_uuid, out_path, options);
  if (!applied.ok()) return applied.status();
  timings.apply_end = Clock::now();
  timings.apply = Since(t0);
  timings.apply_cpu = ProcessCpuSeconds() - c0;
  t0 = Clock::now();
  c0 = ProcessCpuSeconds();
  timings.compress_start = t0;
  // Commit → ZFile → tar envelope, straight into the blob file.
  const std::string tmp_blob = applied->work.Join("blob");
  {
    auto writer = blockstore::LayerBlobFileWriter::Create(tmp_blob, *zopts);
    if (!writer.ok()) return writer.status();
    if (absl::Status s = applied->layer->Commit(writer->get()); !s.ok()) return s;
    if (absl::Status s = (*writer)->Close(); !s.ok()) return s;  // fsyncs
  }
  return FinishBlob(tmp_blob, uuid, out_path, t0, c0, timings, options.timings);
}

absl::StatusOr<SealedLayerFile> ApplyLayer(blockstore::RandomAccessFile& tar,
                                           const std::vector<std::string>& lower_blob_paths,
                                           const std::string& uuid, const std::string& parent_uuid,
                                           const std::string& sealed_path,
                                           const LayerConversionOptions& options) {
  // The options are checked before the work (the compression that uses them comes later).
  if (auto zopts = ZFileOptionsFor(options); !zopts.ok()) return zopts.status();
  LayerConversionTimings timings;
  Clock::time_point t0 = Clock::now();
  double c0 = ProcessCpuSeconds();
  timings.apply_start = t0;
  auto applied =
      ApplyToWritableLayer(tar, lower_blob_paths, uuid, parent_uuid, sealed_path, options);
  if (!applied.ok()) return applied.status();
  // Sealed into a temporary name beside `sealed_path`, renamed when complete. Not fsynced: the
  // file is a temporary of this conversion.
  const std::string tmp = applied->work.Join("sealed");
  uint64_t size = 0;
  {
    auto file = blockstore::CreateLocalFile(tmp);
    if (!file.ok()) return file.status();
    BufferedWritableFile out(*std::move(file));
    if (absl::Status s = applied->layer->Commit(&out); !s.ok()) return s;
    size = out.Size();
    if (absl::Status s = out.Close(); !s.ok()) return s;
  }
  if (::rename(tmp.c_str(), sealed_path.c_str()) != 0) return Errno("rename to", sealed_path);
  timings.apply_end = Clock::now();
  timings.apply = Since(t0);
  timings.apply_cpu = ProcessCpuSeconds() - c0;
  if (options.timings != nullptr) *options.timings = timings;
  return SealedLayerFile{sealed_path, size, uuid};
}

absl::StatusOr<ConvertedLayer> CompressLayer(const std::string& sealed_path,
                                             const std::string& uuid, const std::string& out_path,
                                             const LayerConversionOptions& options) {
  auto zopts = ZFileOptionsFor(options);
  if (!zopts.ok()) return zopts.status();
  LayerConversionTimings timings;
  Clock::time_point t0 = Clock::now();
  double c0 = ProcessCpuSeconds();
  timings.compress_start = t0;
  auto work = WorkDir::Create(out_path);
  if (!work.ok()) return work.status();
  const std::string tmp_blob = work->Join("blob");
  {
    auto file = blockstore::OpenLocalFile(sealed_path);
    if (!file.ok()) return file.status();
    auto writer = blockstore::LayerBlobFileWriter::Create(tmp_blob, *zopts);
    if (!writer.ok()) return writer.status();
    // The same byte stream as a direct commit: the ZFile is byte-identical.
    constexpr uint64_t kChunk = 4 << 20;
    std::string buf;
    const uint64_t size = (*file)->Size();
    for (uint64_t done = 0; done < size;) {
      const uint64_t n = std::min(kChunk, size - done);
      buf.resize(n);
      if (absl::Status s = blockstore::PreadExact(**file, done, n, buf.data(), "sealed layer read");
          !s.ok()) {
        return s;
      }
      if (absl::Status s = (*writer)->Append(buf); !s.ok()) return s;
      done += n;
    }
    if (absl::Status s = (*writer)->Close(); !s.ok()) return s;  // fsyncs
  }
  return FinishBlob(tmp_blob, uuid, out_path, t0, c0, timings, options.timings);
}

}  // namespace dadi::converter
