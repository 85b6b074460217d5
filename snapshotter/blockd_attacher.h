// BlockAttacher over dadi-blockd's gRPC API (dadi.blockd.v1.Blockd) on a unix socket.
//
// blockd reference-counts attachments; the snapshotter holds exactly one reference per device
// id: Attach first asks Stat(id) and only calls Attach when the id is unknown (after a blockd
// restart or a reboot, say), and Detach drops that one reference. The caller serializes calls
// for one id (Snapshotter does), so a Stat/Attach pair never races with itself.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "dadi/blockd/v1/blockd.grpc.pb.h"
#include "snapshotter/block_attacher.h"

namespace dadi::snapshotter {

class BlockdAttacher final : public BlockAttacher {
 public:
  // `address` is blockd's socket path ("/run/dadi/blockd.sock"). Connects lazily.
  explicit BlockdAttacher(const std::string& address);

  absl::StatusOr<std::string> Attach(const std::string& id, const std::vector<RemoteLayer>& layers,
                                     const std::optional<StartupTraceRef>& startup_trace) override;
  absl::Status Detach(const std::string& id) override;

 private:
  // Waits briefly for the channel to be connected; UNAVAILABLE if blockd does not answer.
  absl::Status Connect();

  std::string address_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<dadi::blockd::v1::Blockd::Stub> stub_;
};

}  // namespace dadi::snapshotter
