// The gRPC face of the snapshotter: containerd.services.snapshots.v1.Snapshots, translating
// messages to and from the Snapshotter's types and absl::Status to the gRPC status with the
// same code (containerd's errdefs map those codes back to ErrNotFound, ErrAlreadyExists...).
// The "snapshotter" field of requests and containerd's "containerd-namespace" metadata are
// only logged: keys arrive already namespaced by containerd.
#pragma once

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "containerd/services/snapshots/v1/snapshots.grpc.pb.h"
#include "snapshotter/snapshotter.h"

namespace dadi::snapshotter {

grpc::Status ToGrpcStatus(const absl::Status& status);

class SnapshotsService final : public containerd::services::snapshots::v1::Snapshots::Service {
 public:
  // `snapshotter` must outlive the service.
  explicit SnapshotsService(Snapshotter* snapshotter) : snapshotter_(snapshotter) {}

  grpc::Status Prepare(grpc::ServerContext* ctx,
                       const containerd::services::snapshots::v1::PrepareSnapshotRequest* req,
                       containerd::services::snapshots::v1::PrepareSnapshotResponse* resp) override;
  grpc::Status View(grpc::ServerContext* ctx,
                    const containerd::services::snapshots::v1::ViewSnapshotRequest* req,
                    containerd::services::snapshots::v1::ViewSnapshotResponse* resp) override;
  grpc::Status Mounts(grpc::ServerContext* ctx,
                      const containerd::services::snapshots::v1::MountsRequest* req,
                      containerd::services::snapshots::v1::MountsResponse* resp) override;
  grpc::Status Commit(grpc::ServerContext* ctx,
                      const containerd::services::snapshots::v1::CommitSnapshotRequest* req,
                      google::protobuf::Empty* resp) override;
  grpc::Status Remove(grpc::ServerContext* ctx,
                      const containerd::services::snapshots::v1::RemoveSnapshotRequest* req,
                      google::protobuf::Empty* resp) override;
  grpc::Status Stat(grpc::ServerContext* ctx,
                    const containerd::services::snapshots::v1::StatSnapshotRequest* req,
                    containerd::services::snapshots::v1::StatSnapshotResponse* resp) override;
  grpc::Status Update(grpc::ServerContext* ctx,
                      const containerd::services::snapshots::v1::UpdateSnapshotRequest* req,
                      containerd::services::snapshots::v1::UpdateSnapshotResponse* resp) override;
  grpc::Status List(grpc::ServerContext* ctx,
                    const containerd::services::snapshots::v1::ListSnapshotsRequest* req,
                    grpc::ServerWriter<containerd::services::snapshots::v1::ListSnapshotsResponse>*
                        writer) override;
  grpc::Status Usage(grpc::ServerContext* ctx,
                     const containerd::services::snapshots::v1::UsageRequest* req,
                     containerd::services::snapshots::v1::UsageResponse* resp) override;
  grpc::Status Cleanup(grpc::ServerContext* ctx,
                       const containerd::services::snapshots::v1::CleanupRequest* req,
                       google::protobuf::Empty* resp) override;

 private:
  Snapshotter* snapshotter_;
};

}  // namespace dadi::snapshotter
