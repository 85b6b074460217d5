// `dadi trace ...`: startup traces (blockstore/remote/startup_trace.h, docs/formats.md
// "Startup traces"). A trace is recorded by dadi-blockd while a container starts, written to a
// file by `save`, published by `push` next to an overlaybd image (a blob named by its top
// layer's annotations), and replayed by blockd on every later attach of the image.
//
//   dadi trace save [--blockd SOCKET] [--id ID] FILE   blockd's GetTrace into FILE
//   dadi trace push [registry flags] [--no-pack] FILE docker://REF
//                                                       the startup pack (the stored ranges'
//                                                       bytes), the trace blob naming it, and
//                                                       the annotated manifest
//   dadi trace show FILE                                ranges and bytes of a trace file
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <set>
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
// GetTrace also maps the trace to files: a walk of the whole file system.
constexpr auto kGetTraceTimeout = std::chrono::minutes(5);

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

size_t StoredBlobs(const std::vector<blockstore::StoredRange>& stored) {
  std::set<absl::string_view> blobs;
  for (const blockstore::StoredRange& s : stored) blobs.insert(s.blob);
  return blobs.size();
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

void SetDeadline(grpc::ClientContext* ctx,
                 std::chrono::system_clock::duration timeout = kBlockdCallTimeout) {
  ctx->set_deadline(std::chrono::system_clock::now() + timeout);
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
  SetDeadline(&ctx, kGetTraceTimeout);
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
  bool no_pack = false;
  RegistryFlags registry;
};

struct PushResult {
  std::string manifest_digest;  // the image manifest with the annotations
  std::string index_digest;     // the index pointing at it, when REF is an index
};

// At most this many (merged) ranges of a layer blob per ReadBlobRanges call while building a
// pack: each call is one multi-range GET, and registries read their file once per range.
constexpr size_t kPackRangesPerRead = 64;

// The registry reference of an image's repository (no tag or digest), for blob calls.
blockstore::Reference RepositoryOf(const blockstore::Reference& ref) {
  blockstore::Reference repo;
  repo.registry = ref.registry;
  repo.repository = ref.repository;
  return repo;
}

// Parses the image manifest `body` and checks that it has layers and that every layer is an
// overlaybd layer. `top_repository` gets the top layer's containerd.io/snapshot/dadi/repository,
// if any.
absl::StatusOr<blockstore::ImageManifest> CheckManifest(absl::string_view body,
                                                        const std::string& what,
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
  return std::move(*typed);
}

// Sets the trace annotations on the top layer of the image manifest `body`, which CheckManifest
// accepted (replacing earlier ones; the other bytes of the document keep their order, so the
// result depends only on the manifest and the trace). Returns the new body.
absl::StatusOr<std::string> AnnotateManifest(absl::string_view body, const std::string& what,
                                             const std::string& trace_digest, uint64_t trace_size) {
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

// The startup pack of `stored`: the bytes of those ranges of the image's layer blobs, back to
// back in the order of `stored`, read from `repo`. Every stored range must lie inside a layer of
// `manifest` (a trace recorded on another image names other blobs).
absl::StatusOr<std::string> BuildPack(const blockstore::RegistryClient& client,
                                      const blockstore::Reference& repo, const std::string& what,
                                      const blockstore::ImageManifest& manifest,
                                      const std::vector<blockstore::StoredRange>& stored) {
  std::map<std::string, uint64_t> layer_sizes;
  for (const blockstore::Descriptor& d : manifest.layers) {
    layer_sizes[d.digest] = static_cast<uint64_t>(d.size);
  }
  // Per blob, the indices of its stored ranges (std::map: the blobs are read in a fixed order).
  std::map<std::string, std::vector<size_t>> by_blob;
  for (size_t i = 0; i < stored.size(); ++i) {
    const blockstore::StoredRange& s = stored[i];
    auto layer = layer_sizes.find(s.blob);
    if (layer == layer_sizes.end()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "stored range ", i, " of the trace names blob ", s.blob, ", which is not a layer of ",
          what, ": the trace was recorded on another image (--no-pack pushes it without a pack)"));
    }
    // ParseStartupTrace checked that offset + length does not overflow.
    if (s.range.offset + s.range.length > layer->second) {
      return absl::FailedPreconditionError(absl::StrCat(
          "stored range ", i, " of the trace [", s.range.offset, ", +", s.range.length,
          ") is past the end of layer ", s.blob, " of ", what, " (", layer->second, " bytes)"));
    }
    by_blob[s.blob].push_back(i);
  }
  const uint64_t total = blockstore::StoredBytes(stored);
  if (total > blockstore::kMaxStartupPackBytes) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the trace's stored ranges hold ", total, " bytes, more than a startup pack's limit of ",
        blockstore::kMaxStartupPackBytes, " (--no-pack pushes it without a pack)"));
  }
  // Where each stored range goes in the pack.
  std::vector<uint64_t> position(stored.size());
  uint64_t at = 0;
  for (size_t i = 0; i < stored.size(); ++i) {
    position[i] = at;
    at += stored[i].range.length;
  }
  std::string pack(total, '\0');

  for (auto& [blob, indices] : by_blob) {
    std::sort(indices.begin(), indices.end(),
              [&](size_t a, size_t b) { return stored[a].range.offset < stored[b].range.offset; });
    // ReadBlobRanges wants sorted, disjoint ranges: merge the ones that overlap or touch.
    std::vector<blockstore::ByteRange> merged;
    for (size_t i : indices) {
      const blockstore::ByteRange& r = stored[i].range;
      if (!merged.empty() && r.offset <= merged.back().offset + merged.back().length) {
        uint64_t end = std::max(merged.back().offset + merged.back().length, r.offset + r.length);
        merged.back().length = end - merged.back().offset;
      } else {
        merged.push_back(r);
      }
    }
    size_t next = 0;  // the first of `indices` not copied into the pack yet
    for (size_t begin = 0; begin < merged.size(); begin += kPackRangesPerRead) {
      const size_t end = std::min(merged.size(), begin + kPackRangesPerRead);
      std::vector<blockstore::ByteRange> batch(merged.begin() + begin, merged.begin() + end);
      std::vector<uint64_t> in_buf(batch.size());  // where each merged range starts in `buf`
      uint64_t bytes = 0;
      for (size_t j = 0; j < batch.size(); ++j) {
        in_buf[j] = bytes;
        bytes += batch[j].length;
      }
      std::string buf(bytes, '\0');
      if (absl::Status s = client.ReadBlobRanges(repo, blob, batch, buf.data()); !s.ok()) {
        return absl::Status(s.code(),
                            absl::StrCat("read the stored ranges of layer ", blob, " from ",
                                         repo.registry, "/", repo.repository, ": ", s.message()));
      }
      // The stored ranges inside this batch, in the order of their offsets, as the merged ranges.
      const uint64_t batch_end = batch.back().offset + batch.back().length;
      size_t j = 0;
      for (; next < indices.size() && stored[indices[next]].range.offset < batch_end; ++next) {
        const size_t i = indices[next];
        const blockstore::ByteRange& r = stored[i].range;
        while (r.offset >= batch[j].offset + batch[j].length) ++j;
        std::memcpy(pack.data() + position[i],
                    buf.data() + in_buf[j] + (r.offset - batch[j].offset), r.length);
      }
    }
  }
  return pack;
}

absl::Status PushNamedBlob(const blockstore::RegistryClient& client,
                           const blockstore::Reference& repo, const std::string& what,
                           const std::string& digest, const blockstore::RandomAccessFile& data,
                           const std::string& mount_from) {
  blockstore::PushBlobOptions options;
  options.mount_from = mount_from;
  auto pushed = client.PushBlob(repo, digest, data, options);
  if (!pushed.ok()) {
    return absl::Status(pushed.status().code(),
                        absl::StrCat("push ", what, " ", digest, " to ", repo.registry, "/",
                                     repo.repository, ": ", pushed.status().message()));
  }
  return absl::OkStatus();
}

// Pushes a blob where blockd looks for the image's trace and pack: the repository the image is
// pulled from, and the top layer's own repository when dadi convert recorded another one (same
// registry: mounted).
absl::Status PushToImageRepositories(const blockstore::RegistryClient& client,
                                     const blockstore::Reference& repo,
                                     const std::string& top_repository, const std::string& what,
                                     const std::string& digest, std::string bytes) {
  auto data = blockstore::NewMemoryFile(std::move(bytes), absl::StrCat(what, " ", digest));
  if (absl::Status s = PushNamedBlob(client, repo, what, digest, *data, ""); !s.ok()) return s;
  const std::string here = absl::StrCat(repo.registry, "/", repo.repository);
  if (!top_repository.empty() && top_repository != here) {
    auto other = blockstore::ParseReference(top_repository);
    if (other.ok()) {
      const std::string mount_from = other->registry == repo.registry ? repo.repository : "";
      if (absl::Status s =
              PushNamedBlob(client, RepositoryOf(*other), what, digest, *data, mount_from);
          !s.ok()) {
        return s;
      }
    }
  }
  return absl::OkStatus();
}

// Cuts `pack` (the bytes of `stored`, back to back) into the trace's packs at stored-range
// boundaries: the first small, each next one twice as large up to kLargestPack, so that blockd
// can hand the container its first reads before the rest has arrived. (Four times as large
// saved a GET or two and lost 60-100 ms at 100 Mbit/s: the container's reads wait longer for
// each pack, or fetch its bytes a second time.) Returns the packs' refs; their bytes go to
// `blobs`.
std::vector<blockstore::StartupPackRef> SplitPack(
    const std::vector<blockstore::StoredRange>& stored, const std::string& pack,
    std::vector<std::string>* blobs) {
  constexpr uint64_t kFirstPack = 256 << 10;
  constexpr uint64_t kLargestPack = 2 << 20;
  std::vector<blockstore::StartupPackRef> refs;
  uint64_t target = kFirstPack, start = 0, size = 0;
  size_t ranges = 0;
  for (size_t i = 0; i < stored.size(); ++i) {
    size += stored[i].range.length;
    ++ranges;
    const bool last = i + 1 == stored.size();
    // The last pack may hold the rest of the packs' limit whatever its size.
    if (size < target && !last && refs.size() + 1 < blockstore::kMaxStartupPacks) continue;
    blobs->push_back(pack.substr(start, size));
    refs.push_back(
        blockstore::StartupPackRef{blockstore::Sha256Digest(blobs->back()), size, ranges});
    start += size;
    size = 0;
    ranges = 0;
    target = std::min(target * 2, kLargestPack);
  }
  return refs;
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

  std::string top_repository;
  auto layers = CheckManifest(manifest.body, f.image, &top_repository);
  if (!layers.ok()) return layers.status();

  // The pack first (its blob is pushed before the trace that names it), then the trace blob: the
  // file's bytes unless its pack changes (a pack in the file is never published as it is).
  StartupTrace& t = trace->trace;
  std::vector<std::string> packs;
  if (!f.no_pack && !t.stored.empty()) {
    auto built = BuildPack(client, repo, f.image, *layers, t.stored);
    if (!built.ok()) return built.status();
    t.packs = SplitPack(t.stored, *built, &packs);
    trace->bytes = blockstore::SerializeStartupTrace(t);
  } else if (!t.packs.empty()) {
    t.packs.clear();
    trace->bytes = blockstore::SerializeStartupTrace(t);
  }
  const std::string trace_digest = blockstore::Sha256Digest(trace->bytes);
  auto body = AnnotateManifest(manifest.body, f.image, trace_digest, trace->bytes.size());
  if (!body.ok()) return body.status();

  for (size_t i = 0; i < t.packs.size(); ++i) {
    if (absl::Status s = PushToImageRepositories(client, repo, top_repository, "startup pack",
                                                 t.packs[i].digest, std::move(packs[i]));
        !s.ok()) {
      return s;
    }
  }
  if (!t.packs.empty()) {
    std::fprintf(stderr, "startup packs: %zu blobs, %llu bytes of %zu layer blobs (%zu ranges)\n",
                 t.packs.size(), static_cast<unsigned long long>(blockstore::StoredBytes(t.stored)),
                 StoredBlobs(t.stored), t.stored.size());
  }
  if (absl::Status s = PushToImageRepositories(client, repo, top_repository, "trace blob",
                                               trace_digest, trace->bytes);
      !s.ok()) {
    return s;
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
  cmd->add_flag("--no-pack", push->no_pack,
                "push the trace without a startup pack (the stored ranges' bytes in one blob)");
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
    const StartupTrace& t = trace->trace;
    std::string more;
    if (!t.stored.empty()) {
      absl::StrAppend(&more, ", ", t.stored.size(), " stored ranges, ",
                      blockstore::StoredBytes(t.stored), " bytes of ", StoredBlobs(t.stored),
                      " layer blobs");
    }
    if (!t.packs.empty()) absl::StrAppend(&more, ", ", t.packs.size(), " packs");
    if (!t.files.empty()) {
      uint64_t bytes = 0;
      for (const blockstore::TracedFile& f : t.files) {
        for (const blockstore::ByteRange& r : f.ranges) bytes += r.length;
      }
      absl::StrAppend(&more, ", ", t.files.size(), " files (", bytes, " bytes)");
    }
    std::printf("%s, virtual disk %llu bytes, blob %s (%zu bytes)%s\n", Summary(t).c_str(),
                static_cast<unsigned long long>(t.virtual_size),
                blockstore::Sha256Digest(trace->bytes).c_str(), trace->bytes.size(), more.c_str());
  });
}

}  // namespace dadi::cli
