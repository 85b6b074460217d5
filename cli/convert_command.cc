// `dadi convert SRC DST`: an OCI/Docker image into an overlaybd image (converter/image/). Thin:
// parse arguments, build the registry client, source, destination and dedup database, run
// ImageConverter, print the summary.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "blockstore/remote/registry_client.h"
#include "cli/commands.h"
#include "cli/image_flags.h"
#include "converter/image/dedup_db.h"
#include "converter/image/image_converter.h"
#include "converter/image/image_reference.h"
#include "converter/image/image_store.h"

namespace dadi::cli {
namespace {

namespace image = converter::image;

struct ConvertFlags {
  std::string src, dst;
  std::string platform;
  // zstd: a lazily started container fetches about a fifth fewer bytes than with lz4 (6.6 vs
  // 8.0 MiB to start python3 in the Debian test image), at 124 instead of 150 MB/s of
  // conversion; warm reads decompress fast enough either way (docs/benchmarks.md).
  std::string algorithm = "zstd";
  int level = 0;
  uint32_t block_size = 4096;
  uint64_t vsize_gib = 64;
  std::string db = "/var/lib/dadi/convert.db";
  bool json = false;
  RegistryFlags registry;
};

absl::StatusOr<image::ConvertSummary> RunConvert(const ConvertFlags& f) {
  auto src = image::ParseImageReference(f.src);
  if (!src.ok()) return src.status();
  auto dst = image::ParseImageReference(f.dst);
  if (!dst.ok()) return dst.status();

  auto config = MakeRegistryConfig(f.registry, {&*src, &*dst});
  if (!config.ok()) return config.status();
  auto client = std::make_shared<blockstore::RegistryClient>(*config);

  image::ConvertOptions options;
  options.layer.algorithm = f.algorithm;
  options.layer.level = f.level;
  options.layer.block_size = f.block_size;
  options.layer.vsize = f.vsize_gib << 30;
  if (!f.platform.empty()) {
    auto p = ParsePlatform(f.platform);
    if (!p.ok()) return p.status();
    options.platform = *p;
  }
  std::filesystem::path db_path(f.db);
  std::error_code ec;
  if (db_path.has_parent_path()) std::filesystem::create_directories(db_path.parent_path(), ec);
  options.store_dir = db_path.string() + ".blobs";
  auto work = TempWorkDir::Create("dadi-convert");
  if (!work.ok()) return work.status();
  options.work_dir = (*work)->path();

  auto db = image::DedupDb::Open(f.db);
  if (!db.ok()) return db.status();
  auto source = image::OpenImageSource(*src, client, options.work_dir);
  if (!source.ok()) return source.status();
  auto dest = image::OpenImageDestination(*dst, client, options.work_dir);
  if (!dest.ok()) return dest.status();

  std::unique_ptr<image::ProgressSink> progress;
  if (!f.json) {
    progress = ::isatty(STDERR_FILENO) ? image::NewTerminalProgress(stderr)
                                       : image::NewPlainProgress(stderr);
  }
  image::ImageConverter converter(options, image::DefaultLayerConverter(), db->get(),
                                  progress.get());
  return converter.Convert(**source, **dest);
}

}  // namespace

void RegisterConvertCommands(CLI::App& app, int& exit_code) {
  auto f = std::make_shared<ConvertFlags>();
  CLI::App* cmd = app.add_subcommand("convert", "convert an OCI/Docker image to overlaybd");
  cmd->add_option("SRC", f->src,
                  "source: docker://REF, oci:DIR[:TAG], oci-archive:FILE[:TAG], "
                  "docker-archive:FILE[:REF]")
      ->required();
  cmd->add_option("DST", f->dst,
                  "destination: docker://REF, oci:DIR[:TAG], oci-archive:FILE[:TAG], "
                  "docker-archive:FILE[:REF] (one platform)")
      ->required();
  cmd->add_option("--platform", f->platform, "only this platform of an index (os/arch[/variant])");
  cmd->add_option("--algorithm", f->algorithm, "zstd (default) or lz4")
      ->check(CLI::IsMember({"lz4", "zstd"}));
  cmd->add_option("--level", f->level, "compression level (0 = library default)");
  cmd->add_option("--block-size", f->block_size, "ZFile block size: 4096 to 65536, a power of two");
  cmd->add_option("--vsize", f->vsize_gib, "virtual disk size in GiB (first layer)");
  cmd->add_option("--db", f->db, "layer dedup database (converted blobs kept in DB.blobs/)");
  cmd->add_flag("--json", f->json, "print a JSON summary instead of progress");
  AddRegistryFlags(cmd, &f->registry);
  cmd->callback([f, &exit_code] {
    auto summary = RunConvert(*f);
    if (Failed(summary, "convert", exit_code)) return;
    if (f->json) {
      std::printf("%s\n", summary->ToJson().c_str());
    } else {
      std::printf("%s %d layers (%d reused), %llu -> %llu bytes, %.1fs\n", summary->digest.c_str(),
                  summary->layers, summary->reused,
                  static_cast<unsigned long long>(summary->bytes_in),
                  static_cast<unsigned long long>(summary->bytes_out), summary->seconds);
    }
  });
}

}  // namespace dadi::cli
