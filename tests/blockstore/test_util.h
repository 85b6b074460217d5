// Helpers for libblockstore tests: in-memory writable files, a fault-injecting file, random
// data and hashing.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <random>
#include <string>

#include "blockstore/file/file.h"

namespace dadi::testing {

// A WritableFile appending to a string the test can read.
class StringWritableFile final : public blockstore::WritableFile {
 public:
  explicit StringWritableFile(std::string name = "string") : name_(std::move(name)) {}
  absl::Status Append(absl::string_view data) override {
    if (closed_) return absl::FailedPreconditionError("closed");
    data_.append(data.data(), data.size());
    return absl::OkStatus();
  }
  uint64_t Size() const override { return data_.size(); }
  absl::Status Sync() override { return absl::OkStatus(); }
  absl::Status Close() override {
    closed_ = true;
    return absl::OkStatus();
  }
  std::string Name() const override { return name_; }
  const std::string& data() const { return data_; }
  std::string& mutable_data() { return data_; }

 private:
  std::string name_;
  std::string data_;
  bool closed_ = false;
};

// Wraps a file and fails (or short-reads) reads after a given number of calls.
class FaultInjectionFile final : public blockstore::RandomAccessFile {
 public:
  explicit FaultInjectionFile(std::shared_ptr<const blockstore::RandomAccessFile> base)
      : base_(std::move(base)) {}
  // Read number `n` (0-based) and every later one fail with UNAVAILABLE.
  void FailFromRead(int64_t n) { fail_from_ = n; }
  uint64_t Size() const override { return base_->Size(); }
  absl::StatusOr<size_t> Pread(uint64_t offset, size_t n, char* buf) const override {
    int64_t k = reads_.fetch_add(1);
    if (fail_from_ >= 0 && k >= fail_from_) return absl::UnavailableError("injected read fault");
    return base_->Pread(offset, n, buf);
  }
  std::string Name() const override { return base_->Name(); }
  int64_t reads() const { return reads_.load(); }

 private:
  std::shared_ptr<const blockstore::RandomAccessFile> base_;
  int64_t fail_from_ = -1;
  mutable std::atomic<int64_t> reads_{0};
};

// A cached copy gone bad: flips a bit of byte `at` in the first `times` reads that cover it
// (every read when `times` < 0). Invalidate succeeds, as for a file that can refetch, and is
// counted with the range it was given.
class CorruptingFile final : public blockstore::RandomAccessFile {
 public:
  CorruptingFile(std::shared_ptr<const blockstore::RandomAccessFile> base, uint64_t at, int times)
      : base_(std::move(base)), at_(at), times_(times) {}
  uint64_t Size() const override { return base_->Size(); }
  absl::StatusOr<size_t> Pread(uint64_t offset, size_t n, char* buf) const override {
    reads_.fetch_add(1);
    absl::StatusOr<size_t> got = base_->Pread(offset, n, buf);
    if (got.ok() && at_ >= offset && at_ < offset + *got &&
        (times_ < 0 || corrupted_.load() < times_)) {
      corrupted_.fetch_add(1);
      buf[at_ - offset] ^= 0x10;
    }
    return got;
  }
  std::string Name() const override { return base_->Name(); }
  absl::Status Invalidate(uint64_t offset, uint64_t n) const override {
    invalidations_.fetch_add(1);
    last_invalidated_offset_ = offset;
    last_invalidated_length_ = n;
    return absl::OkStatus();
  }
  int64_t reads() const { return reads_.load(); }
  int64_t corrupted() const { return corrupted_.load(); }
  int64_t invalidations() const { return invalidations_.load(); }
  uint64_t last_invalidated_offset() const { return last_invalidated_offset_.load(); }
  uint64_t last_invalidated_length() const { return last_invalidated_length_.load(); }

 private:
  std::shared_ptr<const blockstore::RandomAccessFile> base_;
  uint64_t at_;
  int times_;
  mutable std::atomic<int64_t> reads_{0}, corrupted_{0}, invalidations_{0};
  mutable std::atomic<uint64_t> last_invalidated_offset_{0}, last_invalidated_length_{0};
};

// `n` bytes mixing random, repetitive text and zero runs (compressible in parts, like disks).
std::string MixedData(size_t n, uint32_t seed);
std::string RandomBytes(size_t n, std::mt19937_64& rng);
std::string ReadFileOrDie(const std::string& path);
std::string Sha256Hex(absl::string_view data);

// Hex sha256 of everything `file` reads, in chunks.
std::string Sha256OfFile(const blockstore::RandomAccessFile& file);

}  // namespace dadi::testing
