// Which layers are overlaybd (remote) layers, read from the labels containerd passes to
// Prepare when it unpacks an image. containerd passes a layer descriptor's annotations whose
// keys start with "containerd.io/snapshot/" as labels, plus "containerd.io/snapshot.ref" =
// the chain id it wants committed (see docs/operations.md for which containerd versions and
// clients do so).
#pragma once

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "snapshotter/block_attacher.h"
#include "snapshotter/types.h"

namespace dadi::snapshotter {

inline constexpr char kLabelSnapshotRef[] = "containerd.io/snapshot.ref";
inline constexpr char kLabelBlobDigest[] = "containerd.io/snapshot/overlaybd/blob-digest";
inline constexpr char kLabelBlobSize[] = "containerd.io/snapshot/overlaybd/blob-size";
// Image reference, set by containerd's snapshotters.AppendInfoHandlerWrapper (CRI, and the
// transfer service when the plugin exports enable_remote_snapshot_annotations = "true").
inline constexpr char kLabelCriImageRef[] = "containerd.io/snapshot/cri.image-ref";
inline constexpr char kLabelImageRef[] = "containerd.io/snapshot/image-ref";
// Written per layer by `dadi convert`: "host[:port]/repository" holding the blob.
inline constexpr char kLabelDadiRepository[] = "containerd.io/snapshot/dadi/repository";
// Set by the snapshotter on the committed snapshot of a remote layer: the repository it
// resolved and will fetch from.
inline constexpr char kLabelDadiRemote[] = "containerd.io/snapshot/dadi/remote-repository";

// Written by `dadi trace push` on the top layer of an image: its startup trace blob, which
// blockd prefetches when it attaches a stack with that layer on top.
inline constexpr char kLabelStartupTraceDigest[] =
    "containerd.io/snapshot/dadi/startup-trace-digest";
inline constexpr char kLabelStartupTraceSize[] = "containerd.io/snapshot/dadi/startup-trace-size";

// The startup trace the labels name; nullopt when they name none or a malformed one.
std::optional<StartupTraceRef> StartupTraceOfLabels(const Labels& labels);

// The repository part of an image reference: "docker.io/library/ubuntu:22.04" →
// "docker.io/library/ubuntu", "127.0.0.1:5000/app@sha256:..." → "127.0.0.1:5000/app".
// Docker Hub short names are expanded as containerd does ("ubuntu" →
// "docker.io/library/ubuntu"). Empty if `ref` is not a reference.
std::string RepositoryOfImageRef(absl::string_view ref);

// What the labels of a Prepare say about its layer.
struct RemoteLayerRequest {
  std::string target;  // containerd.io/snapshot.ref: the name to commit
  RemoteLayer layer;   // repository may be empty: none of the labels named one
};

// nullopt if the labels do not describe an overlaybd layer to be committed (no
// snapshot.ref, no blob digest or size). INVALID_ARGUMENT if they do but a value is malformed
// (a digest that is not "sha256:<64 hex>", a size that is not a positive decimal).
absl::StatusOr<std::optional<RemoteLayerRequest>> ParseRemoteLayerLabels(const Labels& labels);

}  // namespace dadi::snapshotter
