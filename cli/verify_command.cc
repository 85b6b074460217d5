// `dadi verify CONVERTED --source SRC`: the file tree of a converted overlaybd image must equal
// the tree of its source image with the layers applied (converter/verifier.h). Exit 0 when they
// match, 1 with the list of differences (or an error).
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "blockstore/remote/registry_client.h"
#include "cli/commands.h"
#include "cli/image_flags.h"
#include "converter/image/image_reference.h"
#include "converter/image/image_store.h"
#include "converter/verifier.h"

namespace dadi::cli {
namespace {

namespace image = converter::image;

struct VerifyFlags {
  std::string converted, source;
  std::string platform;
  RegistryFlags registry;
};

absl::StatusOr<converter::VerifyReport> RunVerify(const VerifyFlags& f) {
  auto conv_ref = image::ParseImageReference(f.converted);
  if (!conv_ref.ok()) return conv_ref.status();
  auto src_ref = image::ParseImageReference(f.source);
  if (!src_ref.ok()) return src_ref.status();
  auto config = MakeRegistryConfig(f.registry, {&*conv_ref, &*src_ref});
  if (!config.ok()) return config.status();
  auto client = std::make_shared<blockstore::RegistryClient>(*config);

  converter::VerifyOptions options;
  if (!f.platform.empty()) {
    auto platform = ParsePlatform(f.platform);
    if (!platform.ok()) return platform.status();
    options.platform = *platform;
  }
  auto work_dir = TempWorkDir::Create("dadi-verify");
  if (!work_dir.ok()) return work_dir.status();
  const std::string& work = (*work_dir)->path();
  options.work_dir = work;
  std::filesystem::create_directories(work + "/converted");
  std::filesystem::create_directories(work + "/source");
  auto converted = image::OpenImageSource(*conv_ref, client, work + "/converted");
  if (!converted.ok()) return converted.status();
  auto source = image::OpenImageSource(*src_ref, client, work + "/source");
  if (!source.ok()) return source.status();
  return converter::VerifyImage(**converted, **source, options);
}

}  // namespace

void RegisterVerifyCommands(CLI::App& app, int& exit_code) {
  auto f = std::make_shared<VerifyFlags>();
  CLI::App* cmd = app.add_subcommand(
      "verify", "check that a converted image holds the same files as its source image");
  cmd->add_option("CONVERTED", f->converted, "converted image: docker://REF, oci:DIR[:TAG], ...")
      ->required();
  cmd->add_option("--source", f->source, "source image: docker://REF, oci:DIR[:TAG], ...")
      ->required();
  cmd->add_option("--platform", f->platform, "platform of an index (os/arch[/variant])");
  AddRegistryFlags(cmd, &f->registry);
  cmd->callback([f, &exit_code] {
    auto report = RunVerify(*f);
    if (Failed(report, "verify", exit_code)) return;
    std::string what = report->platform.empty() ? "" : absl::StrCat(" (", report->platform, ")");
    if (report->differences.empty()) {
      std::printf("OK%s: %d layers, %llu entries identical\n", what.c_str(), report->layers,
                  static_cast<unsigned long long>(report->entries));
      return;
    }
    std::printf("MISMATCH%s: %zu differences\n", what.c_str(), report->differences.size());
    for (const std::string& d : report->differences) std::printf("  %s\n", d.c_str());
    exit_code = 1;
  });
}

}  // namespace dadi::cli
