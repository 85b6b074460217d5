#include "blockstore/blockd/service.h"

#include <string>

#include "spdlog/spdlog.h"

namespace dadi::blockstore::blockd {
namespace {

namespace pb = ::dadi::blockd::v1;

void FillAttachment(const AttachmentInfo& info, pb::Attachment* out) {
  out->set_id(info.id);
  out->set_device_path(info.device_path);
  out->set_mount_point(info.mount_point);
  out->set_virtual_size(info.virtual_size);
  out->set_refcount(info.refcount);
  for (const LayerSpec& l : info.layers) {
    pb::Layer* layer = out->add_layers();
    layer->set_digest(l.digest);
    layer->set_size(l.size);
    layer->set_repository(l.repository);
  }
}

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  // absl::StatusCode and grpc::StatusCode share the canonical numbering 0..16.
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

grpc::Status BlockdService::Attach(grpc::ServerContext*, const pb::AttachRequest* req,
                                   pb::AttachResponse* resp) {
  AttachSpec spec;
  spec.id = req->id();
  for (const pb::Layer& l : req->layers()) {
    spec.layers.push_back(LayerSpec{l.digest(), l.size(), l.repository()});
  }
  spec.options.insert(req->options().begin(), req->options().end());
  if (req->has_startup_trace() && !req->startup_trace().digest().empty()) {
    spec.startup_trace = BlobRef{req->startup_trace().digest(), req->startup_trace().size()};
  }
  absl::StatusOr<AttachmentInfo> info = table_->Attach(spec);
  if (!info.ok()) {
    spdlog::warn("Attach: {}", info.status().ToString());
    return ToGrpcStatus(info.status());
  }
  resp->set_id(info->id);
  resp->set_device_path(info->device_path);
  resp->set_mount_point(info->mount_point);
  resp->set_virtual_size(info->virtual_size);
  resp->set_refcount(info->refcount);
  return grpc::Status::OK;
}

grpc::Status BlockdService::Detach(grpc::ServerContext*, const pb::DetachRequest* req,
                                   pb::DetachResponse* resp) {
  absl::StatusOr<uint64_t> left = table_->Detach(req->id(), req->force());
  if (!left.ok()) return ToGrpcStatus(left.status());
  resp->set_refcount(*left);
  return grpc::Status::OK;
}

grpc::Status BlockdService::List(grpc::ServerContext*, const pb::ListRequest*,
                                 pb::ListResponse* resp) {
  for (const AttachmentInfo& info : table_->List()) FillAttachment(info, resp->add_attachments());
  return grpc::Status::OK;
}

grpc::Status BlockdService::Stat(grpc::ServerContext*, const pb::StatRequest* req,
                                 pb::StatResponse* resp) {
  absl::StatusOr<AttachmentStats> stats = table_->Stat(req->id());
  if (!stats.ok()) return ToGrpcStatus(stats.status());
  resp->set_bytes_read(stats->image.bytes_read);
  resp->set_bytes_fetched(stats->image.bytes_fetched);
  resp->set_cache_hits(stats->image.cache_hits);
  resp->set_cache_misses(stats->image.cache_misses);
  resp->set_open_layers(stats->image.open_layers);
  resp->set_refcount(stats->info.refcount);
  resp->set_read_errors(stats->image.read_errors);
  FillAttachment(stats->info, resp->mutable_attachment());
  return grpc::Status::OK;
}

grpc::Status BlockdService::Warm(grpc::ServerContext*, const pb::WarmRequest* req,
                                 pb::WarmResponse*) {
  std::vector<LayerSpec> layers;
  for (const pb::Layer& l : req->layers()) {
    layers.push_back(LayerSpec{l.digest(), l.size(), l.repository()});
  }
  return ToGrpcStatus(
      table_->Warm(layers, BlobRef{req->startup_trace().digest(), req->startup_trace().size()}));
}

grpc::Status BlockdService::GetTrace(grpc::ServerContext*, const pb::GetTraceRequest* req,
                                     pb::GetTraceResponse* resp) {
  absl::StatusOr<StartupTrace> trace = table_->GetTrace(req->id());
  if (!trace.ok()) return ToGrpcStatus(trace.status());
  resp->set_trace(SerializeStartupTrace(*trace));
  resp->set_ranges(trace->ranges.size());
  return grpc::Status::OK;
}

grpc::Status BlockdService::Prefetch(grpc::ServerContext*, const pb::PrefetchRequest* req,
                                     pb::PrefetchResponse* resp) {
  std::vector<PrefetchRange> ranges;
  for (const pb::Range& r : req->ranges()) ranges.push_back(PrefetchRange{r.offset(), r.length()});
  std::vector<std::string> digests(req->layer_digests().begin(), req->layer_digests().end());
  absl::StatusOr<PrefetchResult> result = table_->Prefetch(req->id(), ranges, digests, req->wait());
  if (!result.ok()) return ToGrpcStatus(result.status());
  resp->set_bytes_requested(result->bytes_requested);
  resp->set_bytes_done(result->bytes_done);
  return grpc::Status::OK;
}

}  // namespace dadi::blockstore::blockd
