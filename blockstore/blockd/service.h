// The gRPC adapter of dadi-blockd: dadi.blockd.v1.Blockd onto the AttachmentTable. absl::Status
// codes map one-to-one onto gRPC codes (the numbering is the same).
#pragma once

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "blockstore/blockd/attachment_table.h"
#include "dadi/blockd/v1/blockd.grpc.pb.h"

namespace dadi::blockstore::blockd {

grpc::Status ToGrpcStatus(const absl::Status& status);

class BlockdService final : public ::dadi::blockd::v1::Blockd::Service {
 public:
  explicit BlockdService(AttachmentTable* table) : table_(table) {}

  grpc::Status Attach(grpc::ServerContext* context, const ::dadi::blockd::v1::AttachRequest* req,
                      ::dadi::blockd::v1::AttachResponse* resp) override;
  grpc::Status Detach(grpc::ServerContext* context, const ::dadi::blockd::v1::DetachRequest* req,
                      ::dadi::blockd::v1::DetachResponse* resp) override;
  grpc::Status List(grpc::ServerContext* context, const ::dadi::blockd::v1::ListRequest* req,
                    ::dadi::blockd::v1::ListResponse* resp) override;
  grpc::Status Stat(grpc::ServerContext* context, const ::dadi::blockd::v1::StatRequest* req,
                    ::dadi::blockd::v1::StatResponse* resp) override;
  grpc::Status Prefetch(grpc::ServerContext* context,
                        const ::dadi::blockd::v1::PrefetchRequest* req,
                        ::dadi::blockd::v1::PrefetchResponse* resp) override;
  grpc::Status Warm(grpc::ServerContext* context, const ::dadi::blockd::v1::WarmRequest* req,
                    ::dadi::blockd::v1::WarmResponse* resp) override;
  grpc::Status GetTrace(grpc::ServerContext* context,
                        const ::dadi::blockd::v1::GetTraceRequest* req,
                        ::dadi::blockd::v1::GetTraceResponse* resp) override;

 private:
  AttachmentTable* table_;
};

}  // namespace dadi::blockstore::blockd
