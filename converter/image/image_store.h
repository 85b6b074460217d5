// Where images are read from and written to: a registry, an OCI layout directory, an OCI
// archive or a docker-save archive (see image_reference.h). The converter sees only these two
// interfaces.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "blockstore/file/file.h"
#include "blockstore/remote/registry_client.h"
#include "converter/image/image_reference.h"

namespace dadi::converter::image {

struct ManifestDocument {
  std::string media_type;
  std::string digest;
  std::string body;
};

// Reads one image. Not thread-safe.
class ImageSource {
 public:
  virtual ~ImageSource() = default;
  // The manifest or index the reference names.
  virtual absl::StatusOr<ManifestDocument> TopManifest() = 0;
  // A manifest by digest (an index's child).
  virtual absl::StatusOr<ManifestDocument> Manifest(const std::string& digest) = 0;
  // A small blob (a config) in memory, verified against its digest.
  virtual absl::StatusOr<std::string> SmallBlob(const std::string& digest) = 0;
  // A layer blob as a file (a local file, or a registry blob downloaded to `work_dir`).
  virtual absl::StatusOr<std::unique_ptr<blockstore::RandomAccessFile>> Blob(
      const std::string& digest) = 0;
  // The registry reference when this source is a registry (cross-mount candidates).
  virtual std::optional<blockstore::Reference> Registry() const { return std::nullopt; }
};

struct PushStats {
  uint64_t uploaded = 0;
  uint64_t already_existed = 0;
  uint64_t mounted = 0;
};

// Writes one image. PutBlob may be called from another thread than the other calls, but calls
// are never concurrent.
class ImageDestination {
 public:
  virtual ~ImageDestination() = default;
  // Stores a blob unless present. `mount_from` (a repository on the same registry) is tried
  // first by registry destinations.
  virtual absl::StatusOr<blockstore::PushOutcome> PutBlob(const std::string& digest,
                                                          const std::string& local_path,
                                                          const std::string& mount_from) = 0;
  virtual absl::StatusOr<blockstore::PushOutcome> PutSmallBlob(const std::string& digest,
                                                               const std::string& data) = 0;
  // A child manifest stored by digest only.
  virtual absl::Status PutManifest(const ManifestDocument& doc) = 0;
  // The top manifest or index, tagged with the reference's tag.
  virtual absl::Status PutTopManifest(const ManifestDocument& doc) = 0;
  // Finishes (writes the archive).
  virtual absl::Status Commit() = 0;
  // "host/repo" for registry destinations, empty otherwise.
  virtual std::string Repository() const { return ""; }
};

// `work_dir` holds downloads and extracted archives; the caller removes it.
absl::StatusOr<std::unique_ptr<ImageSource>> OpenImageSource(
    const ImageReference& ref, std::shared_ptr<blockstore::RegistryClient> client,
    const std::string& work_dir);
absl::StatusOr<std::unique_ptr<ImageDestination>> OpenImageDestination(
    const ImageReference& ref, std::shared_ptr<blockstore::RegistryClient> client,
    const std::string& work_dir);

// Helpers shared with tests.
absl::Status WriteFileAtomically(const std::string& path, absl::string_view data);
absl::StatusOr<std::string> ReadWholeFile(const std::string& path, size_t max_bytes);
// Packs / unpacks a directory tree as a plain tar (sorted names, zero times: reproducible).
absl::Status TarDirectory(const std::string& dir, const std::string& tar_path);
absl::Status UntarToDirectory(const std::string& tar_path, const std::string& dir);

}  // namespace dadi::converter::image
