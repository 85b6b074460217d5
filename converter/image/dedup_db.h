// The converter's layer dedup database (SQLite): (source chain id, options key) -> the blob
// converted from it, where it is kept locally and which repository it was last pushed to.
// Thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

struct sqlite3;

namespace dadi::converter::image {

struct DedupRecord {
  std::string digest;
  uint64_t size = 0;
  std::string path;  // the local blob file
  std::string uuid;
  std::string repository;  // "host/repo" it was last pushed to, or empty
};

class DedupDb {
 public:
  // Creates the file (and its table) when missing.
  static absl::StatusOr<std::unique_ptr<DedupDb>> Open(const std::string& path);
  ~DedupDb();
  // The record, only when its local file still exists with the recorded size.
  absl::StatusOr<std::optional<DedupRecord>> Lookup(const std::string& chain_id,
                                                    const std::string& options_key);
  absl::Status Put(const std::string& chain_id, const std::string& options_key,
                   const DedupRecord& record);
  absl::Status SetRepository(const std::string& digest, const std::string& repository);

 private:
  explicit DedupDb(sqlite3* db) : db_(db) {}
  absl::Status Exec(const char* sql);
  absl::Mutex mu_;
  sqlite3* db_;
};

}  // namespace dadi::converter::image
