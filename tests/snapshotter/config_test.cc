#include "snapshotter/config.h"

#include <fstream>
#include <sstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/scratch_dir.h"

namespace dadi::snapshotter {
namespace {

TEST(ConfigTest, DefaultsAreDocumented) {
  Config c;
  EXPECT_EQ(c.root, "/var/lib/dadi/snapshotter");
  EXPECT_EQ(c.address, "/run/dadi/snapshotter.sock");
  EXPECT_EQ(c.log_level, "info");
  EXPECT_EQ(c.blockd_address, "/run/dadi/blockd.sock");
}

TEST(ConfigTest, ShippedFileHoldsTheDefaults) {
  // Tests run from the repository root.
  std::ifstream in("deploy/snapshotter.toml");
  ASSERT_TRUE(in.good());
  std::stringstream text;
  text << in.rdbuf();
  Config shipped;
  shipped.root = shipped.address = shipped.log_level = shipped.blockd_address = "unset";
  ASSERT_TRUE(ApplyConfigToml(text.str(), "deploy/snapshotter.toml", &shipped).ok());
  const Config defaults;
  EXPECT_EQ(shipped.root, defaults.root);
  EXPECT_EQ(shipped.address, defaults.address);
  EXPECT_EQ(shipped.log_level, defaults.log_level);
  EXPECT_EQ(shipped.blockd_address, defaults.blockd_address);
}

TEST(ConfigTest, BlockdAddress) {
  Config c;
  ASSERT_TRUE(ApplyConfigToml("blockd_address = \"\"", "t", &c).ok());
  EXPECT_EQ(c.blockd_address, "");  // remote layers disabled
  ASSERT_TRUE(ApplyConfigToml("blockd_address = \"/b.sock\"", "t", &c).ok());
  EXPECT_EQ(c.blockd_address, "/b.sock");
  {
    const char* argv[] = {"dadi-snapshotter", "--config", "/dev/null", "--blockd-address", ""};
    auto cli = ParseCommandLine(5, argv);
    ASSERT_TRUE(cli.ok()) << cli.status();
    EXPECT_EQ(cli->config.blockd_address, "");
  }
  {
    const char* argv[] = {"dadi-snapshotter", "--config", "/dev/null", "--blockd-address",
                          "relative.sock"};
    EXPECT_EQ(ParseCommandLine(5, argv).status().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST(ConfigTest, FallbackRepository) {
  Config c;
  EXPECT_EQ(c.fallback_repository, "");  // none: containerd downloads such layers
  ASSERT_TRUE(ApplyConfigToml("fallback_repository = \"mirror:5000/obd\"", "t", &c).ok());
  EXPECT_EQ(c.fallback_repository, "mirror:5000/obd");
  {
    const char* argv[] = {"dadi-snapshotter", "--config", "/dev/null", "--fallback-repository",
                          "mirror.example/team/images"};
    auto cli = ParseCommandLine(5, argv);
    ASSERT_TRUE(cli.ok()) << cli.status();
    EXPECT_EQ(cli->config.fallback_repository, "mirror.example/team/images");
  }
  // A reference with a tag, or a bare name that would silently mean docker.io/library/...
  for (const char* bad : {"mirror:5000/obd:latest", "ubuntu", "mirror:5000/obd@sha256:00"}) {
    const char* argv[] = {"dadi-snapshotter", "--config", "/dev/null", "--fallback-repository",
                          bad};
    EXPECT_EQ(ParseCommandLine(5, argv).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(ConfigTest, TomlSetsEveryKey) {
  Config c;
  ASSERT_TRUE(
      ApplyConfigToml("root = \"/r\"\naddress = \"/a.sock\"\nlog_level = \"debug\"\n", "test", &c)
          .ok());
  EXPECT_EQ(c.root, "/r");
  EXPECT_EQ(c.address, "/a.sock");
  EXPECT_EQ(c.log_level, "debug");
}

TEST(ConfigTest, TomlErrors) {
  Config c;
  EXPECT_EQ(ApplyConfigToml("roots = \"/r\"", "t", &c).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ApplyConfigToml("root = 3", "t", &c).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ApplyConfigToml("root = ", "t", &c).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ApplyConfigToml("log_level = \"loud\"", "t", &c).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ConfigTest, FlagsOverrideTheFile) {
  dadi::testing::ScratchDir dir("dadi-snap-config");
  const std::string file = dir.Join("snapshotter.toml");
  std::ofstream(file) << "root = \"/from/file\"\naddress = \"/file.sock\"\nlog_level = \"warn\"\n";
  {
    const char* argv[] = {"dadi-snapshotter", "--config", file.c_str(), "--root", "/flag"};
    auto cli = ParseCommandLine(5, argv);
    ASSERT_TRUE(cli.ok()) << cli.status();
    EXPECT_FALSE(cli->exit_code.has_value());
    EXPECT_EQ(cli->config.root, "/flag");
    EXPECT_EQ(cli->config.address, "/file.sock");
    EXPECT_EQ(cli->config.log_level, "warn");
  }
  {
    const char* argv[] = {"dadi-snapshotter", "--config",    file.c_str(), "--address",
                          "/flag.sock",       "--log-level", "error"};
    auto cli = ParseCommandLine(7, argv);
    ASSERT_TRUE(cli.ok()) << cli.status();
    EXPECT_EQ(cli->config.root, "/from/file");
    EXPECT_EQ(cli->config.address, "/flag.sock");
    EXPECT_EQ(cli->config.log_level, "error");
  }
}

TEST(ConfigTest, CommandLineErrors) {
  {
    const char* argv[] = {"dadi-snapshotter", "--config", "/nonexistent/dadi.toml"};
    EXPECT_FALSE(ParseCommandLine(3, argv).ok());
  }
  {
    const char* argv[] = {"dadi-snapshotter", "--config", "/dev/null", "--root", "relative"};
    EXPECT_FALSE(ParseCommandLine(5, argv).ok());
  }
  {
    const char* argv[] = {"dadi-snapshotter", "--config", "/dev/null", "--log-level", "loud"};
    EXPECT_FALSE(ParseCommandLine(5, argv).ok());
  }
  {
    const char* argv[] = {"dadi-snapshotter", "--bogus"};
    auto cli = ParseCommandLine(2, argv);
    ASSERT_TRUE(cli.ok());
    ASSERT_TRUE(cli->exit_code.has_value());
    EXPECT_NE(*cli->exit_code, 0);
  }
  {
    const char* argv[] = {"dadi-snapshotter", "--help"};
    auto cli = ParseCommandLine(2, argv);
    ASSERT_TRUE(cli.ok());
    ASSERT_TRUE(cli->exit_code.has_value());
    EXPECT_EQ(*cli->exit_code, 0);
    EXPECT_THAT(cli->message, ::testing::HasSubstr("--address"));
  }
}

}  // namespace
}  // namespace dadi::snapshotter
