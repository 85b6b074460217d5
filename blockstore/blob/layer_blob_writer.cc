#include "blockstore/blob/layer_blob_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "blockstore/blob/tar_envelope.h"

namespace dadi::blockstore {
namespace {

absl::Status Errno(absl::string_view what, absl::string_view path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

absl::Status PwriteAll(int fd, absl::string_view data, uint64_t off, absl::string_view path) {
  while (!data.empty()) {
    ssize_t w = ::pwrite(fd, data.data(), data.size(), static_cast<off_t>(off));
    if (w < 0) {
      if (errno == EINTR) continue;
      return Errno("pwrite", path);
    }
    data.remove_prefix(static_cast<size_t>(w));
    off += static_cast<uint64_t>(w);
  }
  return absl::OkStatus();
}

}  // namespace

// Appends to the blob file at a running offset; the ZFile writer sees positions relative to the
// start of the ZFile.
class LayerBlobFileWriter::FdAppender final : public WritableFile {
 public:
  FdAppender(UniqueFd fd, std::string path, uint64_t base)
      : fd_(std::move(fd)), path_(std::move(path)), base_(base) {}
  absl::Status Append(absl::string_view data) override {
    absl::Status s = PwriteAll(fd_.get(), data, base_ + size_, path_);
    if (s.ok()) size_ += data.size();
    return s;
  }
  uint64_t Size() const override { return size_; }
  absl::Status Sync() override {
    if (::fsync(fd_.get()) != 0) return Errno("fsync", path_);
    return absl::OkStatus();
  }
  absl::Status Close() override {
    int fd = fd_.release();
    if (::close(fd) != 0) return Errno("close", path_);
    return absl::OkStatus();
  }
  std::string Name() const override { return path_; }
  int fd() const { return fd_.get(); }
  uint64_t base() const { return base_; }

 private:
  UniqueFd fd_;
  std::string path_;
  uint64_t base_;
  uint64_t size_ = 0;
};

LayerBlobFileWriter::~LayerBlobFileWriter() = default;

absl::StatusOr<std::unique_ptr<LayerBlobFileWriter>> LayerBlobFileWriter::Create(
    const std::string& path, ZFileWriterOptions options) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd.valid()) return Errno("create", path);
  // A placeholder head of the final length (the PAX record always fits in one block).
  const std::string head = EncodeTarEnvelopeHead(0);
  if (absl::Status s = PwriteAll(fd.get(), head, 0, path); !s.ok()) return s;
  std::unique_ptr<LayerBlobFileWriter> w(new LayerBlobFileWriter());
  w->path_ = path;
  w->out_ = std::make_unique<FdAppender>(std::move(fd), path, head.size());
  absl::StatusOr<std::unique_ptr<ZFileWriter>> z = ZFileWriter::Create(w->out_.get(), options);
  if (!z.ok()) return z.status();
  w->zfile_ = *std::move(z);
  return w;
}

absl::Status LayerBlobFileWriter::Append(absl::string_view data) {
  if (closed_) return absl::FailedPreconditionError(absl::StrCat(path_, " is closed"));
  return zfile_->Append(data);
}

absl::Status LayerBlobFileWriter::Sync() {
  if (closed_) return absl::FailedPreconditionError(absl::StrCat(path_, " is closed"));
  return zfile_->Sync();
}

absl::Status LayerBlobFileWriter::Close() {
  if (closed_) return absl::FailedPreconditionError(absl::StrCat(path_, " is closed"));
  closed_ = true;
  if (absl::Status s = zfile_->Close(); !s.ok()) return s;
  zfile_size_ = out_->Size();
  const std::string head = EncodeTarEnvelopeHead(zfile_size_);
  if (head.size() != out_->base()) {
    return absl::InternalError(absl::StrCat(path_, ": tar head length changed"));
  }
  if (absl::Status s = out_->Append(EncodeTarEnvelopeTail(zfile_size_)); !s.ok()) return s;
  blob_size_ = out_->base() + out_->Size();
  std::string header;
  zfile_->final_header().EncodeTo(&header);
  if (absl::Status s = PwriteAll(out_->fd(), header, out_->base(), path_); !s.ok()) return s;
  if (absl::Status s = PwriteAll(out_->fd(), head, 0, path_); !s.ok()) return s;
  if (absl::Status s = out_->Sync(); !s.ok()) return s;
  return out_->Close();
}

}  // namespace dadi::blockstore
