// The SQLite store on its own: transactions, the placement callback, and what survives a
// reopen. No snapshot directories are involved.
#include "snapshotter/metastore.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "snapshotter/sqlite.h"
#include "tests/support/scratch_dir.h"

namespace dadi::snapshotter {
namespace {

using ::testing::ElementsAre;
using ::testing::UnorderedElementsAre;

absl::Status Ok(int64_t, int64_t) { return absl::OkStatus(); }

class MetaStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { Reopen(); }
  void Reopen() {
    store_.reset();
    auto s = MetaStore::Open(dir_.Join("metadata.db"));
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = *std::move(s);
  }
  void Committed(const std::string& name, const std::string& parent) {
    auto rec = store_->Create(Kind::kActive, "tmp-" + name, parent, {}, absl::Now(), Ok);
    ASSERT_TRUE(rec.ok()) << rec.status();
    ASSERT_TRUE(
        store_->Commit("tmp-" + name, name, rec->id, {{"n", name}}, {10, 2}, absl::Now()).ok());
  }
  std::vector<std::string> Names() {
    std::vector<std::string> out;
    auto records = store_->List();
    EXPECT_TRUE(records.ok()) << records.status();
    if (!records.ok()) return out;
    for (const auto& r : *records) out.push_back(r.info.name);
    return out;
  }

  dadi::testing::ScratchDir dir_{"dadi-snap-meta"};
  std::unique_ptr<MetaStore> store_;
};

TEST_F(MetaStoreTest, FailedPlacementRecordsNothing) {
  auto rec = store_->Create(Kind::kActive, "k", "", {{"a", "b"}}, absl::Now(),
                            [](int64_t, int64_t) { return absl::InternalError("disk on fire"); });
  EXPECT_EQ(rec.status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(store_->Get("k").status().code(), absl::StatusCode::kNotFound);
  rec = store_->Create(Kind::kActive, "k", "", {}, absl::Now(), Ok);
  ASSERT_TRUE(rec.ok());
  EXPECT_TRUE(store_->Get("k")->info.labels.empty());  // labels of the failed try are gone
}

TEST_F(MetaStoreTest, IdsAreNeverReused) {
  auto a = store_->Create(Kind::kActive, "a", "", {}, absl::Now(), Ok);
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(store_->Remove("a").ok());
  Reopen();
  auto b = store_->Create(Kind::kActive, "b", "", {}, absl::Now(), Ok);
  ASSERT_TRUE(b.ok());
  EXPECT_GT(b->id, a->id);
}

TEST_F(MetaStoreTest, CommitRecordsUsageAndChecksTheId) {
  auto a = store_->Create(Kind::kActive, "a", "", {}, absl::Now(), Ok);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(store_->Commit("a", "c", a->id + 1, {}, {}, absl::Now()).code(),
            absl::StatusCode::kAborted);
  ASSERT_TRUE(store_->Commit("a", "c", a->id, {}, {4096, 3}, absl::Now()).ok());
  auto c = store_->Get("c");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->id, a->id);  // same id: the directory stays where it is
  EXPECT_EQ(c->usage.size, 4096);
  EXPECT_EQ(c->usage.inodes, 3);
}

TEST_F(MetaStoreTest, ParentChainsAndDrops) {
  Committed("l1", "");
  Committed("l2", "l1");
  Committed("l3", "l2");
  Committed("other", "");
  ASSERT_TRUE(store_->Create(Kind::kView, "v", "l3", {}, absl::Now(), Ok).ok());
  auto v = store_->GetWithParents("v");
  ASSERT_TRUE(v.ok());
  ASSERT_EQ(v->parent_ids.size(), 3u);
  EXPECT_EQ(v->parent_ids[0], store_->Get("l3")->id);
  EXPECT_EQ(v->parent_ids[2], store_->Get("l1")->id);

  auto dropped = store_->DropWithDescendants({store_->Get("l2")->id});
  ASSERT_TRUE(dropped.ok()) << dropped.status();
  EXPECT_THAT(*dropped, UnorderedElementsAre("l2", "l3", "v"));
  EXPECT_THAT(Names(), ElementsAre("l1", "other"));
}

TEST_F(MetaStoreTest, EverythingSurvivesReopen) {
  Committed("l1", "");
  ASSERT_TRUE(
      store_->Create(Kind::kActive, "a", "l1", {{"x", "1"}, {"y", "2"}}, absl::Now(), Ok).ok());
  const auto before = store_->List();
  ASSERT_TRUE(before.ok());
  Reopen();
  const auto after = store_->List();
  ASSERT_TRUE(after.ok());
  ASSERT_EQ(after->size(), before->size());
  for (size_t i = 0; i < after->size(); ++i) {
    EXPECT_EQ((*after)[i].id, (*before)[i].id);
    EXPECT_EQ((*after)[i].info.name, (*before)[i].info.name);
    EXPECT_EQ((*after)[i].info.parent, (*before)[i].info.parent);
    EXPECT_EQ((*after)[i].info.kind, (*before)[i].info.kind);
    EXPECT_EQ((*after)[i].info.created, (*before)[i].info.created);
    EXPECT_EQ((*after)[i].info.labels, (*before)[i].info.labels);
  }
}

TEST_F(MetaStoreTest, LabelsWithArbitraryBytes) {
  const std::string key("k\0ey", 4), value("v\xff\0\n", 4);
  ASSERT_TRUE(store_->Create(Kind::kActive, "a", "", {{key, value}}, absl::Now(), Ok).ok());
  Reopen();
  auto a = store_->Get("a");
  ASSERT_TRUE(a.ok());
  ASSERT_EQ(a->info.labels.count(key), 1u);
  EXPECT_EQ(a->info.labels.at(key), value);
}

TEST(MetaStoreOpenTest, RefusesNewerSchema) {
  dadi::testing::ScratchDir dir("dadi-snap-meta");
  {
    auto db = sqlite::Database::Open(dir.Join("metadata.db"));
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE(db->Exec("PRAGMA user_version = 99").ok());
  }
  EXPECT_EQ(MetaStore::Open(dir.Join("metadata.db")).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(MetaStoreOpenTest, UpgradesVersion1) {
  dadi::testing::ScratchDir dir("dadi-snap-meta");
  const std::string path = dir.Join("m.db");
  {
    // A database as version 1 wrote it: no remote_layers, no attachments.
    auto db = sqlite::Database::Open(path);
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE(db->Exec("CREATE TABLE snapshots (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                         "name TEXT NOT NULL UNIQUE, parent_id INTEGER REFERENCES snapshots(id), "
                         "kind INTEGER NOT NULL, created_ns INTEGER NOT NULL, "
                         "updated_ns INTEGER NOT NULL, size INTEGER NOT NULL DEFAULT 0, "
                         "inodes INTEGER NOT NULL DEFAULT 0); "
                         "INSERT INTO snapshots (name, kind, created_ns, updated_ns) "
                         "VALUES ('old', 3, 1, 1); PRAGMA user_version = 1")
                    .ok());
  }
  auto store = MetaStore::Open(path);
  ASSERT_TRUE(store.ok()) << store.status();
  auto old = (*store)->GetWithParents("old");
  ASSERT_TRUE(old.ok()) << old.status();
  EXPECT_FALSE(old->remote.has_value());
  auto rec = (*store)->CreateRemote("r", "old", {}, RemoteLayer{"sha256:00", 1, "h/r"}, absl::Now(),
                                    [](int64_t, int64_t) { return absl::OkStatus(); });
  EXPECT_EQ(rec.status().code(), absl::StatusCode::kFailedPrecondition);
  rec = (*store)->CreateRemote("r", "", {}, RemoteLayer{"sha256:00", 1, "h/r"}, absl::Now(),
                               [](int64_t, int64_t) { return absl::OkStatus(); });
  ASSERT_TRUE(rec.ok()) << rec.status();
  EXPECT_EQ(rec->remote, (RemoteLayer{"sha256:00", 1, "h/r"}));
}

TEST(SqliteTest, TransactionRollsBackUnlessCommitted) {
  dadi::testing::ScratchDir dir("dadi-snap-sqlite");
  auto db = sqlite::Database::Open(dir.Join("t.db"));
  ASSERT_TRUE(db.ok());
  ASSERT_TRUE(db->Exec("CREATE TABLE t (v INTEGER)").ok());
  {
    auto txn = sqlite::Transaction::Begin(&*db);
    ASSERT_TRUE(txn.ok());
    ASSERT_TRUE(db->Exec("INSERT INTO t VALUES (1)").ok());
  }  // no Commit: rolled back
  {
    auto txn = sqlite::Transaction::Begin(&*db);
    ASSERT_TRUE(txn.ok());
    ASSERT_TRUE(db->Exec("INSERT INTO t VALUES (2)").ok());
    ASSERT_TRUE(txn->Commit().ok());
  }
  auto st = db->Prepare("SELECT v FROM t");
  ASSERT_TRUE(st.ok());
  std::vector<int64_t> values;
  while (*st->Step()) values.push_back(st->ColumnInt(0));
  EXPECT_THAT(values, ElementsAre(2));
  EXPECT_FALSE(db->Exec("NOT SQL").ok());
  EXPECT_FALSE(db->Prepare("SELECT nope FROM nowhere").ok());
}

}  // namespace
}  // namespace dadi::snapshotter
