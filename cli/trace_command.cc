// `dadi trace ...`: startup traces (blockstore/remote/startup_trace.h, docs/formats.md
// "Startup traces"). A trace is recorded by dadi-blockd while a container starts, written to a
// file by `save`, published by `push` next to an overlaybd image (a blob named by its top
// layer's annotations), and replayed by blockd on every later attach of the image.
//
//   dadi trace save [--blockd SOCKET] [--id ID] FILE   blockd's GetTrace into FILE
//   dadi trace push [registry flags] FILE docker://REF  the trace blob + annotated manifest
//   dadi trace show FILE                                ranges and bytes of a trace file
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "blockstore/file/file.h"
#include "blockstore/remote/digest.h"
#include "blockstore/remote/manifest.h"
#include "blockstore/remote/reference.h"
#include "blockstore/remote/registry_client.h"
#include "blockstore/remote/startup_trace.h"
#include "cli/commands.h"
#include "cli/image_flags.h"
#include "converter/image/image_converter.h"
#include "converter/image/image_reference.h"
#include "converter/image/image_store.h"
#include "dadi/blockd/v1/blockd.grpc.pb.h"
#include "nlohmann/json.hpp"

namespace dadi::cli {
namespace {

namespace pb = ::dadi::blockd::v1;
namespace image = converter::image;
using blockstore::StartupTrace;
using ojson = nlohmann::ordered_json;

// A local daemon answers List and GetTrace at once; anything slower is a hung daemon.
constexpr auto kBlockdCallTimeout = std::chrono::seconds(30);

// gRPC codes and absl codes share their numbers (both are the canonical codes).
absl::Status FromGrpc(const grpc::Status& s, absl::string_view what) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      absl::StrCat(what, ": ", s.error_message()));
}

uint64_t TraceBytes(const StartupTrace& trace) {
  uint64_t bytes = 0;
  for (const blockstore::TraceRange& r : trace.ranges) bytes += r.length;
  return bytes;
}

std::string Summary(const StartupTrace& trace) {
  return absl::StrCat(trace.ranges.size(), " ranges, ", TraceBytes(trace), " bytes of the disk");
}

// A trace file, read and checked.
struct TraceFile {
  std::string bytes;
  StartupTrace trace;
};

absl::StatusOr<TraceFile> ReadTraceFile(const std::string& path) {
  // One byte over the limit so that ParseStartupTrace names the limit.
  auto data = image::ReadWholeFile(path, blockstore::kMaxStartupTraceBytes + 1);
  if (!data.ok()) return data.status();
  auto trace = blockstore::ParseStartupTrace(*data);
  if (!trace.ok()) {
    return absl::Status(trace.status().code(), absl::StrCat(path, ": ", trace.status().message()));
  }
  return TraceFile{std::move(*data), std::move(*trace)};
}

// --- save ------------------------------------------------------------------------------------

struct SaveFlags {
  std::string blockd = "/run/dadi/blockd.sock";
  std::string id;
  std::string file;
};

void SetDeadline(grpc::ClientContext* ctx) {
  ctx->set_deadline(std::chrono::system_clock::now() + kBlockdCallTimeout);
}

// The only attachment of blockd, or an error listing them.
absl::StatusOr<std::string> OnlyAttachment(pb::Blockd::Stub& stub, const std::string& socket) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  pb::ListResponse resp;
  grpc::Status st = stub.List(&ctx, pb::ListRequest(), &resp);
  if (!st.ok()) return FromGrpc(st, absl::StrCat("List on ", socket));
  if (resp.attachments_size() == 1) return resp.attachments(0).id();
  if (resp.attachments_size() == 0) {
    return absl::NotFoundError(
        absl::StrCat("dadi-blockd at ", socket, " has no attachment: start the container first"));
  }
  std::vector<std::string> ids;
  for (const pb::Attachment& a : resp.attachments()) {
    ids.push_back(a.mount_point().empty() ? a.id()
                                          : absl::StrCat(a.id(), " (", a.mount_point(), ")"));
  }
  return absl::FailedPreconditionError(absl::StrCat("dadi-blockd at ", socket, " has ", ids.size(),
                                                    " attachments; name one with --id:\n  ",
                                                    absl::StrJoin(ids, "\n  ")));
}

absl::StatusOr<std::string> RunSave(const SaveFlags& f) {
  auto channel = grpc::CreateChannel("unix:" + f.blockd, grpc::InsecureChannelCredentials());
  auto stub = pb::Blockd::NewStub(channel);
  std::string id = f.id;
  if (id.empty()) {
    auto only = OnlyAttachment(*stub, f.blockd);
    if (!only.ok()) return only.status();
    id = *only;
  }
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  pb::GetTraceRequest req;
  req.set_id(id);
  pb::GetTraceResponse resp;
  grpc::Status st = stub->GetTrace(&ctx, req, &resp);
  if (!st.ok()) return FromGrpc(st, absl::StrCat("GetTrace ", id, " on ", f.blockd));
  // What blockd sends is what `push` and blockd's replay will parse: check it before writing.
  auto trace = blockstore::ParseStartupTrace(resp.trace());
  if (!trace.ok()) {
    return absl::Status(trace.status().code(), absl::StrCat("trace of ", id, " from ", f.blockd,
                                                            ": ", trace.status().message()));
  }
  if (absl::Status s = image::WriteFileAtomically(f.file, resp.trace()); !s.ok()) return s;
  return absl::StrCat(f.file, ": ", Summary(*trace), " (attachment ", id, ")");
}

// --- push ------------------------------------------------------------------------------------

struct PushFlags {
  std::string file;
  std::string image;
  std::string platform;
  RegistryFlags registry;
};

struct PushResult {
  std::string manifest_digest;  // the image manifest with the annotations
  std::string index_digest;     // the index pointing at it, when REF is an index
};

// The registry reference of an image's repository (no tag or digest), for blob calls.
blockstore::Reference RepositoryOf(const blockstore::Reference& ref) {
  blockstore::Reference repo;
  repo.registry = ref.registry;
  repo.repository = ref.repository;
  return repo;
}

// Sets the trace annotations on the top layer of the image manifest `body` (replacing earlier
// ones; the other bytes of the document keep their order, so the result depends only on the
// manifest and the trace). Checks that every layer is an overlaybd layer. Returns the new body;
// `top_repository` gets the top layer's containerd.io/snapshot/dadi/repository, if any.
absl::StatusOr<std::string> AnnotateManifest(absl::string_view body, const std::string& what,
                                             const std::string& trace_digest, uint64_t trace_size,
                                             std::string* top_repository) {
  auto typed = blockstore::ParseImageManifest(body);
  if (!typed.ok()) {
    return absl::Status(typed.status().code(), absl::StrCat(what, ": ", typed.status().message()));
  }
  if (typed->layers.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(what, " has no layers"));
  }
  for (size_t i = 0; i < typed->layers.size(); ++i) {
    if (typed->layers[i].annotations.count(std::string(image::kOverlaybdDigestAnnotation)) == 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          what, " is not an overlaybd image: layer ", i, " (", typed->layers[i].digest, ") has no ",
          image::kOverlaybdDigestAnnotation, " annotation (convert it with dadi convert)"));
    }
  }
  const auto& top = typed->layers.back().annotations;
  auto repo = top.find(std::string(image::kDadiRepositoryAnnotation));
  if (repo != top.end()) *top_repository = repo->second;

  // ParseImageManifest accepted it, so it is a JSON object with a non-empty "layers" array of
  // objects; parsing cannot fail here.
  ojson doc = ojson::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(what, ": not JSON"));
  ojson& layer = doc["layers"].back();
  ojson& annotations = layer["annotations"];
  // Erase, then append: a manifest annotated before gives the same bytes as a fresh one.
  annotations.erase(blockstore::kStartupTraceDigestAnnotation);
  annotations.erase(blockstore::kStartupTraceSizeAnnotation);
  annotations[blockstore::kStartupTraceDigestAnnotation] = trace_digest;
  annotations[blockstore::kStartupTraceSizeAnnotation] = absl::StrCat(trace_size);
  return doc.dump();
}

absl::Status PushTraceBlob(const blockstore::RegistryClient& client,
                           const blockstore::Reference& repo, const std::string& digest,
                           const std::string& bytes, const std::string& mount_from) {
  auto data = blockstore::NewMemoryFile(bytes, "startup trace " + digest);
  blockstore::PushBlobOptions options;
  options.mount_from = mount_from;
  auto pushed = client.PushBlob(repo, digest, *data, options);
  if (!pushed.ok()) {
    return absl::Status(pushed.status().code(),
                        absl::StrCat("push trace blob ", digest, " to ", repo.registry, "/",
                                     repo.repository, ": ", pushed.status().message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<PushResult> RunPush(const PushFlags& f) {
  auto trace = ReadTraceFile(f.file);
  if (!trace.ok()) return trace.status();
  if (trace->trace.ranges.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        f.file, ": the trace has no ranges (saved before the container read anything?)"));
  }
  auto ref = image::ParseImageReference(f.image);
  if (!ref.ok()) return ref.status();
  if (ref->transport != image::Transport::kDocker) {
    return absl::InvalidArgumentError(
        absl::StrCat(f.image, ": trace push needs a registry image (docker://REF)"));
  }
  if (ref->registry.tag.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        f.image,
        ": name a tag; annotating changes the manifest's digest, so it is pushed under "
        "the tag"));
  }
  std::optional<blockstore::Platform> platform;
  if (!f.platform.empty()) {
    auto p = ParsePlatform(f.platform);
    if (!p.ok()) return p.status();
    platform = *p;
  }
  auto config = MakeRegistryConfig(f.registry, {&*ref});
  if (!config.ok()) return config.status();
  blockstore::RegistryClient client(*config);
  const blockstore::Reference& r = ref->registry;
  const blockstore::Reference repo = RepositoryOf(r);

  auto top = client.GetManifest(r);
  if (!top.ok()) return top.status();
  PushResult result;
  std::optional<ojson> index;  // the index to rewrite, when REF is one
  size_t index_entry = 0;
  blockstore::FetchedManifest manifest;
  if (blockstore::IsIndexMediaType(top->media_type)) {
    auto parsed = blockstore::ParseImageIndex(top->body);
    if (!parsed.ok()) return parsed.status();
    if (!platform) {
      std::vector<std::string> platforms;
      for (const auto& d : parsed->manifests) {
        if (d.platform) {
          platforms.push_back(image::PlatformString(*d.platform));
        }
      }
      return absl::FailedPreconditionError(
          absl::StrCat(f.image, " is an index of ", parsed->manifests.size(),
                       " manifests: name the one to annotate with --platform (has: ",
                       platforms.empty() ? "none" : absl::StrJoin(platforms, ", "), ")"));
    }
    auto selected = blockstore::SelectPlatform(*parsed, *platform);
    if (!selected.ok()) return selected.status();
    for (index_entry = 0; index_entry < parsed->manifests.size(); ++index_entry) {
      if (parsed->manifests[index_entry].digest == selected->digest) break;
    }
    blockstore::Reference child = repo;
    child.digest = selected->digest;
    auto fetched = client.GetManifest(child);
    if (!fetched.ok()) return fetched.status();
    if (!blockstore::IsManifestMediaType(fetched->media_type)) {
      return absl::FailedPreconditionError(absl::StrCat(
          f.image, ": the index entry ", selected->digest, " is not an image manifest"));
    }
    manifest = std::move(*fetched);
    index = ojson::parse(top->body, nullptr, /*allow_exceptions=*/false);
    if (index->is_discarded()) return absl::InvalidArgumentError(f.image + ": index is not JSON");
  } else {
    manifest = std::move(*top);
  }

  const std::string trace_digest = blockstore::Sha256Digest(trace->bytes);
  std::string top_repository;
  auto body =
      AnnotateManifest(manifest.body, f.image, trace_digest, trace->bytes.size(), &top_repository);
  if (!body.ok()) return body.status();

  // The blob goes where blockd looks for it: the repository the image is pulled from, and the
  // top layer's own repository when dadi convert recorded another one (same registry: mounted).
  if (absl::Status s = PushTraceBlob(client, repo, trace_digest, trace->bytes, ""); !s.ok()) {
    return s;
  }
  const std::string here = absl::StrCat(repo.registry, "/", repo.repository);
  if (!top_repository.empty() && top_repository != here) {
    auto other = blockstore::ParseReference(top_repository);
    if (other.ok()) {
      const std::string mount_from = other->registry == repo.registry ? repo.repository : "";
      if (absl::Status s =
              PushTraceBlob(client, RepositoryOf(*other), trace_digest, trace->bytes, mount_from);
          !s.ok()) {
        return s;
      }
    }
  }

  if (!index) {
    blockstore::Reference tagged = repo;
    tagged.tag = r.tag;
    auto digest = client.PutManifest(tagged, manifest.media_type, *body);
    if (!digest.ok()) return digest.status();
    result.manifest_digest = *digest;
    return result;
  }
  blockstore::Reference by_digest = repo;
  by_digest.digest = blockstore::Sha256Digest(*body);
  auto digest = client.PutManifest(by_digest, manifest.media_type, *body);
  if (!digest.ok()) return digest.status();
  result.manifest_digest = *digest;
  ojson& entry = (*index)["manifests"][index_entry];
  entry["digest"] = *digest;
  entry["size"] = body->size();
  std::string index_body = index->dump();
  blockstore::Reference tagged = repo;
  tagged.tag = r.tag;
  auto index_digest = client.PutManifest(tagged, top->media_type, index_body);
  if (!index_digest.ok()) return index_digest.status();
  result.index_digest = *index_digest;
  return result;
}

}  // namespace

void RegisterTraceCommands(CLI::App& app, int& exit_code) {
  CLI::App* group = app.add_subcommand(
      "trace", "startup traces: record with blockd, publish next to an overlaybd image");
  group->require_subcommand(1);

  auto save = std::make_shared<SaveFlags>();
  CLI::App* cmd = group->add_subcommand(
      "save", "write the startup trace of a blockd attachment (what its device served) to FILE");
  cmd->add_option("--blockd", save->blockd, "dadi-blockd's socket")->capture_default_str();
  cmd->add_option("--id", save->id, "the attachment (default: the only one)");
  cmd->add_option("FILE", save->file, "where to write the trace (replaced atomically)")->required();
  cmd->callback([save, &exit_code] {
    auto line = RunSave(*save);
    if (Failed(line, "trace save", exit_code)) return;
    std::printf("%s\n", line->c_str());
  });

  auto push = std::make_shared<PushFlags>();
  cmd = group->add_subcommand(
      "push",
      "push a startup trace next to an overlaybd image and name it in its top layer's annotations");
  cmd->add_option("FILE", push->file, "the trace (from dadi trace save)")->required();
  cmd->add_option("REF", push->image, "the overlaybd image: docker://REF (a tag)")->required();
  cmd->add_option("--platform", push->platform,
                  "the platform's manifest of an index (os/arch[/variant])");
  AddRegistryFlags(cmd, &push->registry);
  cmd->callback([push, &exit_code] {
    auto result = RunPush(*push);
    if (Failed(result, "trace push", exit_code)) return;
    if (result->index_digest.empty()) {
      std::printf("%s\n", result->manifest_digest.c_str());
    } else {
      std::printf("%s (manifest %s)\n", result->index_digest.c_str(),
                  result->manifest_digest.c_str());
    }
  });

  auto show_file = std::make_shared<std::string>();
  cmd = group->add_subcommand("show", "print the ranges and bytes of a startup trace file");
  cmd->add_option("FILE", *show_file, "the trace")->required();
  cmd->callback([show_file, &exit_code] {
    auto trace = ReadTraceFile(*show_file);
    if (Failed(trace, "trace show", exit_code)) return;
    std::printf("%s, virtual disk %llu bytes, blob %s (%zu bytes)\n", Summary(trace->trace).c_str(),
                static_cast<unsigned long long>(trace->trace.virtual_size),
                blockstore::Sha256Digest(trace->bytes).c_str(), trace->bytes.size());
  });
}

}  // namespace dadi::cli
