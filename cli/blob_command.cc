// `dadi blob ...`: ZFile, LSMT and overlaybd layer-blob tools. Thin: parse arguments, call
// libblockstore, print.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "blockstore/blob/layer_blob.h"
#include "blockstore/blob/layer_blob_writer.h"
#include "blockstore/file/file.h"
#include "blockstore/file/file_views.h"
#include "blockstore/file/unique_fd.h"
#include "blockstore/lsmt/layer_stack.h"
#include "blockstore/lsmt/sealed_layer_writer.h"
#include "blockstore/lsmt/writable_layer.h"
#include "blockstore/zfile/zfile_reader.h"
#include "blockstore/zfile/zfile_writer.h"
#include "cli/commands.h"
#include "nlohmann/json.hpp"

namespace dadi::cli {
namespace {

using blockstore::LayerBlob;
using blockstore::RandomAccessFile;

struct ZFileFlags {
  std::string algorithm = "lz4";
  int level = 0;
  uint32_t block_size = 4096;
  bool no_verify = false;
  int threads = 1;
};

void AddZFileFlags(CLI::App* cmd, ZFileFlags* f) {
  cmd->add_option("--algorithm", f->algorithm, "lz4 or zstd")
      ->check(CLI::IsMember({"lz4", "zstd"}));
  cmd->add_option("--level", f->level, "compression level (0 = library default)");
  cmd->add_option("--block-size", f->block_size, "block size: 4096 to 65536, a power of two");
  cmd->add_flag("--no-verify", f->no_verify, "do not store a CRC after each block");
  cmd->add_option("--threads", f->threads, "compression threads");
}

blockstore::ZFileWriterOptions ToOptions(const ZFileFlags& f) {
  blockstore::ZFileWriterOptions o;
  o.algorithm =
      f.algorithm == "zstd" ? blockstore::ZFileAlgorithm::kZstd : blockstore::ZFileAlgorithm::kLz4;
  o.level = f.level;
  o.block_size = f.block_size;
  o.verify = !f.no_verify;
  o.threads = f.threads;
  return o;
}

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "dadi: %s\n", std::string(s.ToString()).c_str());
  return 1;
}

absl::StatusOr<std::shared_ptr<const RandomAccessFile>> Open(const std::string& path) {
  absl::StatusOr<std::unique_ptr<RandomAccessFile>> f = blockstore::OpenLocalFile(path);
  if (!f.ok()) return f.status();
  return std::shared_ptr<const RandomAccessFile>(*std::move(f));
}

// Copies all of `in` to `out`.
absl::Status Copy(const RandomAccessFile& in, blockstore::WritableFile* out) {
  std::string buf(4 << 20, '\0');
  for (uint64_t off = 0; off < in.Size();) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), in.Size() - off));
    if (absl::Status s = blockstore::PreadExact(in, off, n, buf.data(), "input"); !s.ok()) return s;
    if (absl::Status s = out->Append(absl::string_view(buf.data(), n)); !s.ok()) return s;
    off += n;
  }
  return absl::OkStatus();
}

// Compresses `in` into a ZFile at `out_path`; with `blob`, as an overlaybd layer blob.
absl::Status CompressTo(const RandomAccessFile& in, const std::string& out_path,
                        const ZFileFlags& flags, bool blob) {
  if (blob) {
    auto w = blockstore::LayerBlobFileWriter::Create(out_path, ToOptions(flags));
    if (!w.ok()) return w.status();
    if (absl::Status s = Copy(in, w->get()); !s.ok()) return s;
    return (*w)->Close();
  }
  absl::StatusOr<std::unique_ptr<blockstore::WritableFile>> out =
      blockstore::CreateLocalFile(out_path);
  if (!out.ok()) return out.status();
  auto w = blockstore::ZFileWriter::Create(out->get(), ToOptions(flags));
  if (!w.ok()) return w.status();
  if (absl::Status s = Copy(in, w->get()); !s.ok()) return s;
  if (absl::Status s = (*w)->Close(); !s.ok()) return s;
  return (*out)->Close();
}

absl::StatusOr<std::shared_ptr<const blockstore::LayerStack>> OpenStack(
    const std::vector<std::string>& paths, std::vector<std::unique_ptr<LayerBlob>>* keep) {
  std::vector<std::shared_ptr<const blockstore::SealedLayer>> layers;
  for (const std::string& p : paths) {
    auto f = Open(p);
    if (!f.ok()) return f.status();
    auto b = LayerBlob::OpenAny(*f);
    if (!b.ok()) return b.status();
    layers.push_back((*b)->layer());
    keep->push_back(*std::move(b));
  }
  return blockstore::LayerStack::Create(std::move(layers));
}

const char* FormatName(blockstore::LayerFormat f) {
  switch (f) {
    case blockstore::LayerFormat::kBlob:
      return "overlaybd layer blob";
    case blockstore::LayerFormat::kZFile:
      return "ZFile";
    case blockstore::LayerFormat::kSealedLsmt:
      return "sealed LSMT layer";
  }
  return "?";
}

nlohmann::ordered_json ZFileJson(const blockstore::ZFileReader& z) {
  const blockstore::ZFileHeader& h = z.header();
  const blockstore::ZFileHeader& i = z.info();
  return {{"header_flags", h.flags},
          {"header_overwrite", h.header_overwrite()},
          {"flags", i.flags},
          {"algorithm", std::string(blockstore::ZFileAlgorithmName(i.algorithm))},
          {"level", i.level},
          {"block_size", i.block_size},
          {"verify", i.verify != 0},
          {"blocks", i.index_size},
          {"index_offset", i.index_offset},
          {"original_size", i.original_file_size},
          {"compressed_size", z.compressed_size()},
          {"ratio", i.original_file_size == 0 ? 0.0
                                              : static_cast<double>(z.compressed_size()) /
                                                    static_cast<double>(i.original_file_size)}};
}

nlohmann::ordered_json LayerJson(const blockstore::SealedLayer& l) {
  const blockstore::LsmtHeader& t = l.trailer();
  uint64_t zeroed = 0;
  for (const auto& m : l.index().mappings()) zeroed += m.zeroed ? 1 : 0;
  return {{"uuid", t.uuid},
          {"parent_uuid", t.parent_uuid},
          {"user_tag", t.user_tag},
          {"flags", t.flags},
          {"virtual_size", t.virtual_size},
          {"index_offset", t.index_offset},
          {"index_entries_on_disk", t.index_size},
          {"segments", l.index().size()},
          {"zeroed_segments", zeroed},
          {"data_bytes", l.data_bytes()},
          {"version", absl::StrCat(t.version, ".", t.sub_version)}};
}

nlohmann::ordered_json InspectJson(const LayerBlob& b, uint64_t file_size) {
  nlohmann::ordered_json j;
  j["format"] = FormatName(b.format());
  j["file_size"] = file_size;
  if (b.format() == blockstore::LayerFormat::kBlob) {
    j["tar"] = {{"entry", b.entry().name},
                {"data_offset", b.entry().data_offset},
                {"size", b.entry().size}};
  }
  if (b.zfile() != nullptr) j["zfile"] = ZFileJson(*b.zfile());
  j["lsmt"] = LayerJson(*b.layer());
  j["open_cost"] = {{"reads", b.open_cost().reads}, {"bytes", b.open_cost().bytes}};
  return j;
}

void PrintReadable(const nlohmann::ordered_json& j, int indent = 0) {
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it->is_object()) {
      std::printf("%*s%s:\n", indent, "", it.key().c_str());
      PrintReadable(*it, indent + 2);
    } else if (it->is_number_float()) {
      std::printf("%*s%-22s %.4f\n", indent, "", (it.key() + ":").c_str(), it->get<double>());
    } else if (it->is_number_unsigned() && (it.key() == "flags" || it.key() == "header_flags")) {
      std::printf("%*s%-22s 0x%llx\n", indent, "", (it.key() + ":").c_str(),
                  static_cast<unsigned long long>(it->get<uint64_t>()));
    } else {
      std::string v = it->is_string() ? it->get<std::string>() : it->dump();
      std::printf("%*s%-22s %s\n", indent, "", (it.key() + ":").c_str(), v.c_str());
    }
  }
}

// Describes a layer file (plain, ZFile or blob) by its LSMT trailer and index.
absl::StatusOr<nlohmann::ordered_json> DescribeLayer(std::shared_ptr<const RandomAccessFile> f) {
  auto b = LayerBlob::OpenAny(f);
  if (!b.ok()) return b.status();
  return LayerJson(*(*b)->layer());
}

// Describes a layer blob, ZFile or sealed layer: headers, flags, counts and ratios. A ZFile
// that holds no LSMT layer is described as a ZFile alone.
absl::StatusOr<nlohmann::ordered_json> Inspect(std::shared_ptr<const RandomAccessFile> f) {
  const uint64_t size = f->Size();
  auto b = LayerBlob::OpenAny(f);
  if (b.ok()) return InspectJson(**b, size);
  auto z = blockstore::ZFileReader::Open(f);
  if (!z.ok()) return b.status();
  nlohmann::ordered_json j = {{"format", "ZFile"}, {"file_size", size}, {"zfile", ZFileJson(**z)}};
  return j;
}

// `parent NAME FILE [--json]`: prints describe(FILE) as JSON (--json) or as readable lines; a
// failure sets exit_code. `file_name` and `file_help` name and explain FILE in --help.
void AddDescribeCommand(
    CLI::App* parent, const char* name, const char* help, const char* file_name,
    const char* file_help, int& exit_code,
    std::function<absl::StatusOr<nlohmann::ordered_json>(std::shared_ptr<const RandomAccessFile>)>
        describe) {
  auto* cmd = parent->add_subcommand(name, help);
  auto in = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  cmd->add_option(file_name, *in, file_help)->required();
  cmd->add_flag("--json", *json, "print JSON");
  cmd->callback([=, &exit_code] {
    auto f = Open(*in);
    absl::StatusOr<nlohmann::ordered_json> j = f.ok() ? describe(*f) : f.status();
    if (!j.ok()) {
      exit_code = Fail(j.status());
      return;
    }
    if (*json) {
      std::printf("%s\n", j->dump(2).c_str());
    } else {
      PrintReadable(*j);
    }
  });
}

// Writes a flat raw image of `stack` to `path`: holes stay sparse.
absl::Status ExportFlat(const blockstore::LayerStack& stack, const std::string& path) {
  blockstore::UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd.valid()) return absl::InternalError(absl::StrCat("create ", path));
  if (::ftruncate(fd.get(), static_cast<off_t>(stack.Size())) != 0) {
    return absl::InternalError(absl::StrCat("ftruncate ", path));
  }
  std::string buf;
  constexpr uint64_t kChunk = 4 << 20;
  for (const auto& m : stack.index().mappings()) {
    if (m.zeroed) continue;
    for (uint64_t off = m.offset * 512; off < m.end() * 512; off += kChunk) {
      uint64_t n = std::min(kChunk, m.end() * 512 - off);
      buf.resize(n);
      if (absl::Status s = blockstore::PreadExact(stack, off, n, buf.data(), "stack"); !s.ok()) {
        return s;
      }
      for (size_t done = 0; done < n;) {
        ssize_t w = ::pwrite(fd.get(), buf.data() + done, n - done, static_cast<off_t>(off + done));
        if (w < 0) return absl::InternalError(absl::StrCat("pwrite ", path));
        done += static_cast<size_t>(w);
      }
    }
  }
  if (::fsync(fd.get()) != 0) return absl::InternalError(absl::StrCat("fsync ", path));
  return absl::OkStatus();
}

// Writes one sealed layer holding what the stack reads (the top layer's uuid and tag, the bottom
// layer's parent).
absl::Status MergeStack(const blockstore::LayerStack& stack, const std::string& path) {
  const auto& top = stack.layers().back()->trailer();
  auto o = blockstore::CreateLocalFile(path);
  if (!o.ok()) return o.status();
  auto w = blockstore::SealedLayerWriter::Create(
      o->get(),
      {top.virtual_size, top.uuid, stack.layers().front()->trailer().parent_uuid, top.user_tag});
  absl::Status s = w.status();
  std::string buf;
  constexpr uint64_t kMergeChunk = 4 << 20;
  for (const auto& m : stack.index().mappings()) {
    if (!s.ok()) break;
    if (m.zeroed) {
      s = (*w)->AddZeroed(m.offset * 512, uint64_t{m.length} * 512);
      continue;
    }
    // Merged segments can be long (contiguous pieces join): copy in bounded chunks.
    const uint64_t end = m.end() * 512;
    for (uint64_t off = m.offset * 512; s.ok() && off < end; off += kMergeChunk) {
      buf.resize(std::min(kMergeChunk, end - off));
      s = blockstore::PreadExact(stack, off, buf.size(), buf.data(), "stack");
      if (s.ok()) s = (*w)->AddData(off, buf);
    }
  }
  if (s.ok()) s = (*w)->Finish();
  if (s.ok()) s = (*o)->Close();
  return s;
}

// `parent NAME OUTPUT LAYERS...`: opens the stack of LAYERS (bottom first) and runs fn(stack,
// OUTPUT); a failure sets exit_code.
void AddStackCommand(
    CLI::App* parent, const char* name, const char* help, const char* output_help,
    const char* layers_help, int& exit_code,
    std::function<absl::Status(const blockstore::LayerStack&, const std::string&)> fn) {
  auto* cmd = parent->add_subcommand(name, help);
  auto out = std::make_shared<std::string>();
  auto layers = std::make_shared<std::vector<std::string>>();
  cmd->add_option("output", *out, output_help)->required();
  cmd->add_option("layers", *layers, layers_help)->required();
  cmd->callback([=, &exit_code] {
    std::vector<std::unique_ptr<LayerBlob>> keep;
    auto stack = OpenStack(*layers, &keep);
    absl::Status s = stack.ok() ? fn(**stack, *out) : stack.status();
    if (!s.ok()) exit_code = Fail(s);
  });
}

}  // namespace

void RegisterBlobCommands(CLI::App& app, int& exit_code) {
  auto* blob = app.add_subcommand("blob", "ZFile, LSMT and overlaybd layer blob tools");
  blob->require_subcommand(1);

  // dadi blob zfile ...
  auto* zfile = blob->add_subcommand("zfile", "compress, decompress and verify ZFiles");
  zfile->require_subcommand(1);
  {
    auto* cmd = zfile->add_subcommand("compress", "compress a file into a ZFile");
    auto in = std::make_shared<std::string>(), out = std::make_shared<std::string>();
    auto flags = std::make_shared<ZFileFlags>();
    auto blob_flag = std::make_shared<bool>(false);
    cmd->add_option("input", *in, "file to compress")->required();
    cmd->add_option("output", *out, "ZFile to write")->required();
    AddZFileFlags(cmd, flags.get());
    cmd->add_flag("--blob", *blob_flag, "wrap the ZFile as an overlaybd layer blob (tar)");
    cmd->callback([=, &exit_code] {
      auto f = Open(*in);
      if (!f.ok()) {
        exit_code = Fail(f.status());
        return;
      }
      if (absl::Status s = CompressTo(**f, *out, *flags, *blob_flag); !s.ok()) exit_code = Fail(s);
    });
  }
  {
    auto* cmd = zfile->add_subcommand("decompress", "decompress a ZFile (or the ZFile of a blob)");
    auto in = std::make_shared<std::string>(), out = std::make_shared<std::string>();
    cmd->add_option("input", *in, "ZFile or layer blob")->required();
    cmd->add_option("output", *out, "file to write")->required();
    cmd->callback([=, &exit_code] {
      auto f = Open(*in);
      if (!f.ok()) {
        exit_code = Fail(f.status());
        return;
      }
      std::shared_ptr<const RandomAccessFile> z_in = *f;
      char magic[5] = {};
      if ((*f)->Pread(0, 5, magic).value_or(0) == 5 && std::string(magic, 5) != "ZFile") {
        auto e = blockstore::ReadTarEnvelope(**f);
        if (!e.ok()) {
          exit_code = Fail(e.status());
          return;
        }
        auto slice = blockstore::NewSliceFile(*f, e->data_offset, e->size);
        if (!slice.ok()) {
          exit_code = Fail(slice.status());
          return;
        }
        z_in = *slice;
      }
      auto z = blockstore::ZFileReader::Open(z_in);
      if (!z.ok()) {
        exit_code = Fail(z.status());
        return;
      }
      auto o = blockstore::CreateLocalFile(*out);
      absl::Status s = o.ok() ? Copy(**z, o->get()) : o.status();
      if (s.ok()) s = (*o)->Close();
      if (!s.ok()) exit_code = Fail(s);
    });
  }
  {
    auto* cmd = zfile->add_subcommand("verify", "check every block's CRC and decompression");
    auto in = std::make_shared<std::string>();
    cmd->add_option("input", *in, "ZFile")->required();
    cmd->callback([=, &exit_code] {
      auto f = Open(*in);
      if (!f.ok()) {
        exit_code = Fail(f.status());
        return;
      }
      auto z = blockstore::ZFileReader::Open(*f);
      absl::Status s = z.ok() ? (*z)->VerifyAll() : z.status();
      if (!s.ok()) {
        exit_code = Fail(s);
        return;
      }
      std::printf("%s: OK (%llu blocks, %llu bytes)\n", in->c_str(),
                  static_cast<unsigned long long>((*z)->block_count()),
                  static_cast<unsigned long long>((*z)->Size()));
    });
  }

  // dadi blob lsmt ...
  auto* lsmt = blob->add_subcommand("lsmt", "LSMT layers and stacks");
  lsmt->require_subcommand(1);
  AddDescribeCommand(lsmt, "info", "show a sealed layer (plain, ZFile or blob)", "layer",
                     "layer file", exit_code, DescribeLayer);
  {
    auto* cmd = lsmt->add_subcommand("commit", "commit a writable layer into a sealed layer");
    auto data = std::make_shared<std::string>(), index = std::make_shared<std::string>(),
         out = std::make_shared<std::string>();
    auto flags = std::make_shared<ZFileFlags>();
    auto zflag = std::make_shared<bool>(false), blob_flag = std::make_shared<bool>(false);
    cmd->add_option("data", *data, "writable layer data file")->required();
    cmd->add_option("index", *index, "writable layer index file")->required();
    cmd->add_option("output", *out, "sealed layer to write")->required();
    cmd->add_flag("--zfile", *zflag, "compress the sealed layer as a ZFile");
    cmd->add_flag("--blob", *blob_flag, "compress and wrap as an overlaybd layer blob");
    AddZFileFlags(cmd, flags.get());
    cmd->callback([=, &exit_code] {
      auto layer = blockstore::WritableLayer::Open(*data, *index);
      if (!layer.ok()) {
        exit_code = Fail(layer.status());
        return;
      }
      bool compress = *zflag || *blob_flag;
      std::string sealed_path = compress ? *out + ".sealed.tmp" : *out;
      auto o = blockstore::CreateLocalFile(sealed_path);
      absl::Status s = o.ok() ? (*layer)->Commit(o->get()) : o.status();
      if (s.ok()) s = (*o)->Close();
      if (s.ok() && compress) {
        auto f = Open(sealed_path);
        s = f.ok() ? CompressTo(**f, *out, *flags, *blob_flag) : f.status();
        ::unlink(sealed_path.c_str());
      }
      if (!s.ok()) exit_code = Fail(s);
    });
  }
  AddStackCommand(lsmt, "merge", "merge a stack of layers into one sealed layer",
                  "sealed layer to write", "layers, bottom first", exit_code, MergeStack);
  AddStackCommand(lsmt, "export", "write the flat raw disk image of a stack",
                  "raw image to write (sparse)", "layers, bottom first (plain, ZFile or blob)",
                  exit_code, ExportFlat);

  // dadi blob inspect
  AddDescribeCommand(blob, "inspect", "show headers, flags, counts and ratios", "file",
                     "layer blob, ZFile or sealed LSMT layer", exit_code, Inspect);
}

}  // namespace dadi::cli
