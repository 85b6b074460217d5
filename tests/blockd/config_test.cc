// dadi-blockd's configuration: every key of the TOML file, the JSON registry config under it,
// flags over the file, and the errors a misspelt or mistyped key gives.
#include "blockstore/blockd/config.h"

#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/support/scratch_dir.h"

namespace dadi::blockstore::blockd {
namespace {

void WriteFile(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

absl::StatusOr<CommandLine> Parse(std::vector<std::string> args) {
  args.insert(args.begin(), "dadi-blockd");
  std::vector<const char*> argv;
  for (const std::string& a : args) argv.push_back(a.c_str());
  return ParseCommandLine(static_cast<int>(argv.size()), argv.data());
}

TEST(BlockdConfigTest, EveryKeyOfTheFileApplies) {
  Config c;
  absl::Status s = ApplyConfigToml(R"(
socket = "/tmp/x/blockd.sock"
state_dir = "/tmp/x/state"
cache_dir = "/tmp/x/cache"
cache_size_limit = 1073741824
cache_unit = 262144
cache_fetch = 1048576
block_cache_bytes = 1048576
readahead_bytes = 0
fuse_threads = 2
device_read_ahead_kb = 32
loop_direct_io = false
log_level = "debug"
[registry]
ca_file = "/etc/ca.pem"
connect_timeout_ms = 1500
request_timeout_ms = 2500
stall_timeout_ms = 3500
max_attempts = 2
initial_backoff_ms = 10
max_backoff_ms = 20
[registry.hosts."127.0.0.1:5000"]
plain_http = true
insecure_skip_verify = true
ca_file = "/etc/host-ca.pem"
mirrors = ["http://127.0.0.1:5001"]
username = "user"
password = "secret"
)",
                                   "test.toml", &c);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(c.socket, "/tmp/x/blockd.sock");
  EXPECT_EQ(c.state_dir, "/tmp/x/state");
  EXPECT_EQ(c.cache_dir, "/tmp/x/cache");
  EXPECT_EQ(c.cache_size_limit, 1073741824u);
  EXPECT_EQ(c.cache_unit, 262144u);
  EXPECT_EQ(c.cache_fetch, 1048576u);
  EXPECT_EQ(c.block_cache_bytes, 1048576u);
  EXPECT_EQ(c.readahead_bytes, 0u);
  EXPECT_EQ(c.fuse_threads, 2);
  EXPECT_EQ(c.device_read_ahead_kb, 32u);
  EXPECT_FALSE(c.loop_direct_io);
  EXPECT_EQ(c.log_level, "debug");
  EXPECT_EQ(c.registry.ca_file, "/etc/ca.pem");
  EXPECT_EQ(c.registry.connect_timeout, absl::Milliseconds(1500));
  EXPECT_EQ(c.registry.request_timeout, absl::Milliseconds(2500));
  EXPECT_EQ(c.registry.stall_timeout, absl::Milliseconds(3500));
  EXPECT_EQ(c.registry.retry.max_attempts, 2);
  EXPECT_EQ(c.registry.retry.initial_backoff, absl::Milliseconds(10));
  EXPECT_EQ(c.registry.retry.max_backoff, absl::Milliseconds(20));
  const HostConfig host = c.registry.Host("127.0.0.1:5000");
  EXPECT_TRUE(host.plain_http);
  EXPECT_TRUE(host.insecure_skip_verify);
  EXPECT_EQ(host.ca_file, "/etc/host-ca.pem");
  ASSERT_EQ(host.mirrors.size(), 1u);
  EXPECT_EQ(host.mirrors[0], "http://127.0.0.1:5001");
  ASSERT_TRUE(host.credentials.has_value());
  EXPECT_EQ(host.credentials->username, "user");
  EXPECT_EQ(host.credentials->password, "secret");
  EXPECT_TRUE(ValidateConfig(c).ok());
}

TEST(BlockdConfigTest, UnknownOrMistypedKeysAreErrors) {
  Config c;
  absl::Status s = ApplyConfigToml("sockett = \"/x\"\n", "f.toml", &c);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("sockett"), absl::string_view::npos) << s;
  EXPECT_EQ(ApplyConfigToml("fuse_threads = \"4\"\n", "f.toml", &c).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ApplyConfigToml("cache_size_limit = -1\n", "f.toml", &c).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ApplyConfigToml("[registry]\nretries = 3\n", "f.toml", &c).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ApplyConfigToml("[registry.hosts.\"h\"]\nplain = true\n", "f.toml", &c).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ApplyConfigToml("socket = \n", "f.toml", &c).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ApplyConfigToml("device_read_ahead_kb = 1048576\n", "f.toml", &c).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ApplyConfigToml("loop_direct_io = 1\n", "f.toml", &c).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(BlockdConfigTest, FlagsOverrideTheFileAndJsonRegistryConfigIsTheBase) {
  testing::ScratchDir dir("dadi-blockd-config");
  WriteFile(dir.Join("registry.json"),
            R"({"hosts": {"r.example:5000": {"plain_http": true}}, "retry": {"max_attempts": 7}})");
  WriteFile(dir.Join("blockd.toml"), "registry_config = \"" + dir.Join("registry.json") +
                                         "\"\nsocket = \"/from/file.sock\"\n"
                                         "[registry]\nmax_backoff_ms = 99\n");
  absl::StatusOr<CommandLine> cli =
      Parse({"--config", dir.Join("blockd.toml"), "--state-dir", "/flag/state", "--plain-http",
             "other:5000", "--mirror", "r.example:5000=http://m:1", "--max-attempts", "3"});
  ASSERT_TRUE(cli.ok()) << cli.status();
  ASSERT_FALSE(cli->exit_code.has_value()) << cli->message;
  const Config& c = cli->config;
  EXPECT_EQ(c.socket, "/from/file.sock");
  EXPECT_EQ(c.state_dir, "/flag/state");
  EXPECT_TRUE(c.registry.Host("r.example:5000").plain_http);  // from the JSON
  EXPECT_EQ(c.registry.Host("r.example:5000").mirrors, std::vector<std::string>{"http://m:1"});
  EXPECT_TRUE(c.registry.Host("other:5000").plain_http);
  EXPECT_EQ(c.registry.retry.max_attempts, 3);                      // flag over JSON
  EXPECT_EQ(c.registry.retry.max_backoff, absl::Milliseconds(99));  // TOML over JSON
}

TEST(BlockdConfigTest, BadValuesAreRefused) {
  testing::ScratchDir dir("dadi-blockd-config");
  EXPECT_FALSE(Parse({"--config", dir.Join("missing.toml")}).ok());
  WriteFile(dir.Join("empty.toml"), "");
  EXPECT_FALSE(Parse({"--config", dir.Join("empty.toml"), "--socket", "relative.sock"}).ok());
  EXPECT_FALSE(Parse({"--config", dir.Join("empty.toml"), "--log-level", "loud"}).ok());
  EXPECT_FALSE(Parse({"--config", dir.Join("empty.toml"), "--cache-unit", "1000"}).ok());
  // A fetch must be whole units; one below the unit is the unit.
  EXPECT_FALSE(Parse({"--config", dir.Join("empty.toml"), "--cache-fetch", "12288"}).ok());
  EXPECT_TRUE(Parse({"--config", dir.Join("empty.toml"), "--cache-unit", "65536"}).ok());
  EXPECT_FALSE(Parse({"--config", dir.Join("empty.toml"), "--mirror", "nohost"}).ok());
  absl::StatusOr<CommandLine> flags =
      Parse({"--config", dir.Join("empty.toml"), "--device-read-ahead-kb", "64", "--loop-direct-io",
             "false"});
  ASSERT_TRUE(flags.ok()) << flags.status();
  ASSERT_FALSE(flags->exit_code.has_value()) << flags->message;
  EXPECT_EQ(flags->config.device_read_ahead_kb, 64u);
  EXPECT_FALSE(flags->config.loop_direct_io);
  absl::StatusOr<CommandLine> too_much =
      Parse({"--config", dir.Join("empty.toml"), "--device-read-ahead-kb", "99999"});
  EXPECT_TRUE(!too_much.ok() || too_much->exit_code.value_or(0) != 0);
  absl::StatusOr<CommandLine> help = Parse({"--help"});
  ASSERT_TRUE(help.ok());
  ASSERT_TRUE(help->exit_code.has_value());
  EXPECT_EQ(*help->exit_code, 0);
  EXPECT_NE(help->message.find("--cache-size-limit"), std::string::npos);
}

}  // namespace
}  // namespace dadi::blockstore::blockd
