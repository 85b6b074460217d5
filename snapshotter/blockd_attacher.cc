#include "snapshotter/blockd_attacher.h"

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"

namespace dadi::snapshotter {
namespace pb = ::dadi::blockd::v1;

namespace {

// Opening a stack reads a few small ranges per layer from the registry; a cold registry or a
// deep stack can take a while, but containerd's own call has a deadline too.
constexpr auto kAttachTimeout = std::chrono::seconds(120);
constexpr auto kCallTimeout = std::chrono::seconds(30);
// How long a call waits for blockd's socket to accept a connection: long enough for blockd to
// come back from a restart, short enough that containerd hears of a dead blockd quickly.
constexpr auto kConnectTimeout = std::chrono::seconds(3);

absl::Status FromGrpc(const grpc::Status& st, absl::string_view what) {
  if (st.ok()) return absl::OkStatus();
  // gRPC and absl share the canonical code numbering.
  return absl::Status(static_cast<absl::StatusCode>(st.error_code()),
                      absl::StrCat("dadi-blockd ", what, ": ", st.error_message()));
}

void AddLayers(const std::vector<RemoteLayer>& layers,
               google::protobuf::RepeatedPtrField<pb::Layer>* out) {
  for (const RemoteLayer& l : layers) {
    pb::Layer* pl = out->Add();
    pl->set_digest(l.digest);
    pl->set_size(l.size);
    pl->set_repository(l.repository);
  }
}

void SetDeadline(grpc::ClientContext* ctx, std::chrono::seconds timeout) {
  // Not wait_for_ready: with blockd down, containerd gets UNAVAILABLE at once rather than a
  // hung call; Mounts re-attaches once blockd is back.
  ctx->set_deadline(std::chrono::system_clock::now() + timeout);
}

// A synchronous call of the stub, e.g. &pb::Blockd::Stub::Stat.
template <typename Request, typename Response>
using StubCall = grpc::Status (pb::Blockd::Stub::*)(grpc::ClientContext*, const Request&,
                                                    Response*);

// One of blockd's calls that name an attachment by its id alone (Stat, Detach).
template <typename Request, typename Response>
grpc::Status CallWithId(pb::Blockd::Stub& stub, StubCall<Request, Response> call,
                        const std::string& id, Response* resp) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx, kCallTimeout);
  Request req;
  req.set_id(id);
  return (stub.*call)(&ctx, req, resp);
}

}  // namespace

BlockdAttacher::BlockdAttacher(const std::string& address) : address_(address) {
  // gRPC's reconnect backoff grows to two minutes by default; a local daemon that restarts
  // is worth retrying every second at most.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  channel_ = grpc::CreateCustomChannel("unix:" + address, grpc::InsecureChannelCredentials(), args);
  stub_ = pb::Blockd::NewStub(channel_);
}

absl::Status BlockdAttacher::Connect() {
  if (channel_->GetState(/*try_to_connect=*/true) == GRPC_CHANNEL_READY) return absl::OkStatus();
  if (channel_->WaitForConnected(std::chrono::system_clock::now() + kConnectTimeout)) {
    return absl::OkStatus();
  }
  return absl::UnavailableError(
      absl::StrCat("dadi-blockd does not answer on ", address_, " (is it running?)"));
}

absl::StatusOr<std::string> BlockdAttacher::Attach(
    const std::string& id, const std::vector<RemoteLayer>& layers,
    const std::optional<StartupTraceRef>& startup_trace) {
  if (absl::Status st = Connect(); !st.ok()) return st;
  {
    pb::StatResponse resp;
    grpc::Status st = CallWithId(*stub_, &pb::Blockd::Stub::Stat, id, &resp);
    if (st.ok()) return resp.attachment().mount_point();
    if (st.error_code() != grpc::StatusCode::NOT_FOUND) {
      return FromGrpc(st, absl::StrCat("Stat ", id, " on ", address_));
    }
  }
  grpc::ClientContext ctx;
  SetDeadline(&ctx, kAttachTimeout);
  pb::AttachRequest req;
  req.set_id(id);
  if (startup_trace.has_value()) {
    req.mutable_startup_trace()->set_digest(startup_trace->digest);
    req.mutable_startup_trace()->set_size(startup_trace->size);
  }
  AddLayers(layers, req.mutable_layers());
  pb::AttachResponse resp;
  grpc::Status st = stub_->Attach(&ctx, req, &resp);
  if (!st.ok()) return FromGrpc(st, absl::StrCat("Attach ", id, " on ", address_));
  if (resp.mount_point().empty()) {
    return absl::InternalError(absl::StrCat("dadi-blockd Attach ", id, ": no mount point"));
  }
  return resp.mount_point();
}

absl::Status BlockdAttacher::Detach(const std::string& id) {
  if (absl::Status st = Connect(); !st.ok()) return st;
  pb::DetachResponse resp;
  grpc::Status st = CallWithId(*stub_, &pb::Blockd::Stub::Detach, id, &resp);
  if (st.error_code() == grpc::StatusCode::NOT_FOUND) return absl::OkStatus();
  return FromGrpc(st, absl::StrCat("Detach ", id, " on ", address_));
}

}  // namespace dadi::snapshotter
