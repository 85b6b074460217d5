// `dadi convert` argument handling: errors reach the user with a non-zero exit status.
#include <gtest/gtest.h>

#include <string>

#include "tests/converter/converter_test_util.h"
#include "tests/support/scratch_dir.h"

namespace {

struct Result {
  int status = -1;
  std::string output;  // stdout and stderr
};

Result Dadi(const std::string& args) {
  Result r;
  r.status = dadi::testing::RunShell(std::string(DADI_CLI_PATH) + " " + args, &r.output);
  return r;
}

TEST(CliConvertTest, Errors) {
  dadi::testing::ScratchDir dir("cli-convert");
  std::string db = " --db " + dir.Join("c.db");
  Result r = Dadi("convert ftp://x/y oci:" + dir.Join("out") + db);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("unknown transport \"ftp\""), std::string::npos) << r.output;
  r = Dadi("convert oci:" + dir.Join("missing") + " oci:" + dir.Join("out") + db);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("no such directory"), std::string::npos) << r.output;
  r = Dadi("convert oci:" + dir.Join("missing") + " oci:" + dir.Join("out") + db +
           " --platform linux");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("--platform"), std::string::npos) << r.output;
  r = Dadi("convert oci:a oci:b --algorithm gzip" + db);
  EXPECT_NE(r.status, 0);
  r = Dadi("convert --help");
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.output.find("--vsize"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("docker-archive"), std::string::npos) << r.output;
}

}  // namespace
