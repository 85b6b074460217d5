// Streams an overlaybd layer blob straight into a local file: the bytes appended are compressed
// as a ZFile inside the tar envelope, and Close fills in what is only known at the end (the tar
// size fields and the ZFile header with the final fields). With SealedLayerWriter on top, a
// writable layer becomes a blob in one pass without a temporary file.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "blockstore/file/file.h"
#include "blockstore/file/unique_fd.h"
#include "blockstore/zfile/zfile_writer.h"

namespace dadi::blockstore {

class LayerBlobFileWriter final : public WritableFile {
 public:
  // Creates (truncates) `path`.
  static absl::StatusOr<std::unique_ptr<LayerBlobFileWriter>> Create(const std::string& path,
                                                                     ZFileWriterOptions options);
  ~LayerBlobFileWriter() override;

  // Appends decompressed bytes (usually a sealed LSMT layer).
  absl::Status Append(absl::string_view data) override;
  uint64_t Size() const override { return zfile_->Size(); }
  absl::Status Sync() override;
  // Finishes the ZFile, patches the headers, writes the tar tail, fsyncs and closes the file.
  absl::Status Close() override;
  std::string Name() const override { return path_; }

  // After Close: bytes of the whole blob and of the ZFile inside it.
  uint64_t blob_size() const { return blob_size_; }
  uint64_t zfile_size() const { return zfile_size_; }

 private:
  class FdAppender;
  LayerBlobFileWriter() = default;

  std::string path_;
  std::unique_ptr<FdAppender> out_;
  std::unique_ptr<ZFileWriter> zfile_;
  uint64_t blob_size_ = 0;
  uint64_t zfile_size_ = 0;
  bool closed_ = false;
};

}  // namespace dadi::blockstore
