#include "converter/image/dedup_db.h"

#include <sqlite3.h>
#include <sys/stat.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace dadi::converter::image {
namespace {

// Finalizes a statement on scope exit.
struct Stmt {
  sqlite3_stmt* s = nullptr;
  ~Stmt() { sqlite3_finalize(s); }
};

}  // namespace

absl::StatusOr<std::unique_ptr<DedupDb>> DedupDb::Open(const std::string& path) {
  sqlite3* db = nullptr;
  int rc =
      sqlite3_open_v2(path.c_str(), &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);
    return absl::UnavailableError(absl::StrCat("dedup database ", path, ": ", msg));
  }
  sqlite3_busy_timeout(db, 10000);
  std::unique_ptr<DedupDb> out(new DedupDb(db));
  if (absl::Status s =
          out->Exec("CREATE TABLE IF NOT EXISTS layers ("
                    " chain_id TEXT NOT NULL, options TEXT NOT NULL, digest TEXT NOT NULL,"
                    " size INTEGER NOT NULL, path TEXT NOT NULL, uuid TEXT NOT NULL,"
                    " repository TEXT NOT NULL DEFAULT '', PRIMARY KEY (chain_id, options))");
      !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("dedup database ", path, ": ", s.message()));
  }
  return out;
}

DedupDb::~DedupDb() { sqlite3_close(db_); }

absl::Status DedupDb::Exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "error";
    sqlite3_free(err);
    return absl::InternalError(msg);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<DedupRecord>> DedupDb::Lookup(const std::string& chain_id,
                                                           const std::string& options_key) {
  absl::MutexLock lock(&mu_);
  Stmt st;
  if (sqlite3_prepare_v2(db_,
                         "SELECT digest, size, path, uuid, repository FROM layers "
                         "WHERE chain_id = ? AND options = ?",
                         -1, &st.s, nullptr) != SQLITE_OK) {
    return absl::InternalError(absl::StrCat("dedup lookup: ", sqlite3_errmsg(db_)));
  }
  sqlite3_bind_text(st.s, 1, chain_id.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st.s, 2, options_key.c_str(), -1, SQLITE_TRANSIENT);
  int rc = sqlite3_step(st.s);
  if (rc == SQLITE_DONE) return std::nullopt;
  if (rc != SQLITE_ROW) {
    return absl::InternalError(absl::StrCat("dedup lookup: ", sqlite3_errmsg(db_)));
  }
  auto text = [&](int i) {
    const unsigned char* t = sqlite3_column_text(st.s, i);
    return t ? std::string(reinterpret_cast<const char*>(t)) : std::string();
  };
  DedupRecord r;
  r.digest = text(0);
  r.size = static_cast<uint64_t>(sqlite3_column_int64(st.s, 1));
  r.path = text(2);
  r.uuid = text(3);
  r.repository = text(4);
  struct stat sb;
  // A blob removed (or replaced) since is converted again.
  if (::stat(r.path.c_str(), &sb) != 0 || static_cast<uint64_t>(sb.st_size) != r.size) {
    return std::nullopt;
  }
  return r;
}

absl::Status DedupDb::Put(const std::string& chain_id, const std::string& options_key,
                          const DedupRecord& r) {
  absl::MutexLock lock(&mu_);
  Stmt st;
  if (sqlite3_prepare_v2(db_,
                         "INSERT OR REPLACE INTO layers (chain_id, options, digest, size, path,"
                         " uuid, repository) VALUES (?, ?, ?, ?, ?, ?, ?)",
                         -1, &st.s, nullptr) != SQLITE_OK) {
    return absl::InternalError(absl::StrCat("dedup put: ", sqlite3_errmsg(db_)));
  }
  sqlite3_bind_text(st.s, 1, chain_id.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st.s, 2, options_key.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st.s, 3, r.digest.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(st.s, 4, static_cast<sqlite3_int64>(r.size));
  sqlite3_bind_text(st.s, 5, r.path.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st.s, 6, r.uuid.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st.s, 7, r.repository.c_str(), -1, SQLITE_TRANSIENT);
  if (sqlite3_step(st.s) != SQLITE_DONE) {
    return absl::InternalError(absl::StrCat("dedup put: ", sqlite3_errmsg(db_)));
  }
  return absl::OkStatus();
}

absl::Status DedupDb::SetRepository(const std::string& digest, const std::string& repository) {
  absl::MutexLock lock(&mu_);
  Stmt st;
  if (sqlite3_prepare_v2(db_, "UPDATE layers SET repository = ? WHERE digest = ?", -1, &st.s,
                         nullptr) != SQLITE_OK) {
    return absl::InternalError(absl::StrCat("dedup update: ", sqlite3_errmsg(db_)));
  }
  sqlite3_bind_text(st.s, 1, repository.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st.s, 2, digest.c_str(), -1, SQLITE_TRANSIENT);
  if (sqlite3_step(st.s) != SQLITE_DONE) {
    return absl::InternalError(absl::StrCat("dedup update: ", sqlite3_errmsg(db_)));
  }
  return absl::OkStatus();
}

}  // namespace dadi::converter::image
