#include "snapshotter/service.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "spdlog/spdlog.h"

namespace dadi::snapshotter {
namespace pb = ::containerd::services::snapshots::v1;

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  // absl and gRPC share the canonical code numbering.
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

namespace {

std::string Namespace(const grpc::ServerContext* ctx) {
  const auto& md = ctx->client_metadata();
  auto it = md.find("containerd-namespace");
  return it == md.end() ? std::string() : std::string(it->second.data(), it->second.size());
}

// Logs a failed call at the level its code deserves: NOT_FOUND and ALREADY_EXISTS are
// ordinary answers (containerd probes with them), the rest deserve attention.
grpc::Status Done(const char* rpc, const std::string& key, const absl::Status& st) {
  if (!st.ok()) {
    if (absl::IsNotFound(st) || absl::IsAlreadyExists(st)) {
      spdlog::debug("{} \"{}\": {}", rpc, key, st.ToString());
    } else if (absl::IsInternal(st) || absl::IsUnknown(st) || absl::IsDataLoss(st)) {
      spdlog::error("{} \"{}\": {}", rpc, key, st.ToString());
    } else {
      spdlog::info("{} \"{}\": {}", rpc, key, st.ToString());
    }
  }
  return ToGrpcStatus(st);
}

Labels ToLabels(const google::protobuf::Map<std::string, std::string>& m) {
  return Labels(m.begin(), m.end());
}

template <typename Repeated>
void ToProto(const std::vector<Mount>& mounts, Repeated* out) {
  for (const Mount& m : mounts) {
    auto* pm = out->Add();
    pm->set_type(m.type);
    pm->set_source(m.source);
    for (const std::string& o : m.options) pm->add_options(o);
  }
}

void ToProto(absl::Time t, google::protobuf::Timestamp* out) {
  const int64_t ns = absl::ToUnixNanos(t);
  int64_t secs = ns / 1000000000;
  int64_t nanos = ns % 1000000000;
  if (nanos < 0) nanos += 1000000000, --secs;
  out->set_seconds(secs);
  out->set_nanos(static_cast<int32_t>(nanos));
}

absl::Time FromProto(const google::protobuf::Timestamp& t) {
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

void ToProto(const Info& info, pb::Info* out) {
  out->set_name(info.name);
  out->set_parent(info.parent);
  out->set_kind(static_cast<pb::Kind>(info.kind));
  ToProto(info.created, out->mutable_created_at());
  ToProto(info.updated, out->mutable_updated_at());
  out->mutable_labels()->insert(info.labels.begin(), info.labels.end());
}

Info FromProto(const pb::Info& in) {
  Info info;
  info.name = in.name();
  info.parent = in.parent();
  info.kind = static_cast<Kind>(in.kind());
  info.created = FromProto(in.created_at());
  info.updated = FromProto(in.updated_at());
  info.labels = ToLabels(in.labels());
  return info;
}

}  // namespace

grpc::Status SnapshotsService::Prepare(grpc::ServerContext* ctx,
                                       const pb::PrepareSnapshotRequest* req,
                                       pb::PrepareSnapshotResponse* resp) {
  spdlog::debug("Prepare ns={} key=\"{}\" parent=\"{}\"", Namespace(ctx), req->key(),
                req->parent());
  auto mounts = snapshotter_->Prepare(req->key(), req->parent(), ToLabels(req->labels()));
  if (mounts.ok()) ToProto(*mounts, resp->mutable_mounts());
  return Done("Prepare", req->key(), mounts.status());
}

grpc::Status SnapshotsService::View(grpc::ServerContext* ctx, const pb::ViewSnapshotRequest* req,
                                    pb::ViewSnapshotResponse* resp) {
  spdlog::debug("View ns={} key=\"{}\" parent=\"{}\"", Namespace(ctx), req->key(), req->parent());
  auto mounts = snapshotter_->View(req->key(), req->parent(), ToLabels(req->labels()));
  if (mounts.ok()) ToProto(*mounts, resp->mutable_mounts());
  return Done("View", req->key(), mounts.status());
}

grpc::Status SnapshotsService::Mounts(grpc::ServerContext* ctx, const pb::MountsRequest* req,
                                      pb::MountsResponse* resp) {
  spdlog::debug("Mounts ns={} key=\"{}\"", Namespace(ctx), req->key());
  auto mounts = snapshotter_->Mounts(req->key());
  if (mounts.ok()) ToProto(*mounts, resp->mutable_mounts());
  return Done("Mounts", req->key(), mounts.status());
}

grpc::Status SnapshotsService::Commit(grpc::ServerContext* ctx,
                                      const pb::CommitSnapshotRequest* req,
                                      google::protobuf::Empty* /*resp*/) {
  spdlog::debug("Commit ns={} key=\"{}\" name=\"{}\"", Namespace(ctx), req->key(), req->name());
  return Done("Commit", req->key(),
              snapshotter_->Commit(req->name(), req->key(), ToLabels(req->labels())));
}

grpc::Status SnapshotsService::Remove(grpc::ServerContext* ctx,
                                      const pb::RemoveSnapshotRequest* req,
                                      google::protobuf::Empty* /*resp*/) {
  spdlog::debug("Remove ns={} key=\"{}\"", Namespace(ctx), req->key());
  return Done("Remove", req->key(), snapshotter_->Remove(req->key()));
}

grpc::Status SnapshotsService::Stat(grpc::ServerContext* ctx, const pb::StatSnapshotRequest* req,
                                    pb::StatSnapshotResponse* resp) {
  spdlog::debug("Stat ns={} key=\"{}\"", Namespace(ctx), req->key());
  auto info = snapshotter_->Stat(req->key());
  if (info.ok()) ToProto(*info, resp->mutable_info());
  return Done("Stat", req->key(), info.status());
}

grpc::Status SnapshotsService::Update(grpc::ServerContext* ctx,
                                      const pb::UpdateSnapshotRequest* req,
                                      pb::UpdateSnapshotResponse* resp) {
  spdlog::debug("Update ns={} name=\"{}\"", Namespace(ctx), req->info().name());
  const std::vector<std::string> paths(req->update_mask().paths().begin(),
                                       req->update_mask().paths().end());
  auto info = snapshotter_->Update(FromProto(req->info()), paths);
  if (info.ok()) ToProto(*info, resp->mutable_info());
  return Done("Update", req->info().name(), info.status());
}

grpc::Status SnapshotsService::List(grpc::ServerContext* ctx, const pb::ListSnapshotsRequest* req,
                                    grpc::ServerWriter<pb::ListSnapshotsResponse>* writer) {
  spdlog::debug("List ns={} filters=[{}]", Namespace(ctx), absl::StrJoin(req->filters(), "; "));
  auto filter = ParseFilters({req->filters().begin(), req->filters().end()});
  if (!filter.ok()) return Done("List", "", filter.status());
  // Batches keep each message far below gRPC's 4 MiB limit even with large labels.
  constexpr size_t kBatchBytes = 1 << 20;
  pb::ListSnapshotsResponse batch;
  size_t batch_bytes = 0;
  auto flush = [&]() -> absl::Status {
    if (batch.info_size() == 0) return absl::OkStatus();
    if (!writer->Write(batch)) return absl::CancelledError("List: client went away");
    batch.Clear();
    batch_bytes = 0;
    return absl::OkStatus();
  };
  absl::Status st = snapshotter_->Walk(*filter, [&](const Info& info) -> absl::Status {
    pb::Info* added = batch.add_info();
    ToProto(info, added);
    batch_bytes += added->ByteSizeLong() + 8;
    if (batch_bytes >= kBatchBytes) return flush();
    return absl::OkStatus();
  });
  if (st.ok()) st = flush();
  return Done("List", "", st);
}

grpc::Status SnapshotsService::Usage(grpc::ServerContext* ctx, const pb::UsageRequest* req,
                                     pb::UsageResponse* resp) {
  spdlog::debug("Usage ns={} key=\"{}\"", Namespace(ctx), req->key());
  auto usage = snapshotter_->GetUsage(req->key());
  if (usage.ok()) {
    resp->set_size(usage->size);
    resp->set_inodes(usage->inodes);
  }
  return Done("Usage", req->key(), usage.status());
}

grpc::Status SnapshotsService::Cleanup(grpc::ServerContext* ctx, const pb::CleanupRequest* /*req*/,
                                       google::protobuf::Empty* /*resp*/) {
  spdlog::debug("Cleanup ns={}", Namespace(ctx));
  return Done("Cleanup", "", snapshotter_->Cleanup());
}

}  // namespace dadi::snapshotter
