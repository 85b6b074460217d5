#include "tests/support/scratch_dir.h"

#include <cstdlib>
#include <filesystem>
#include <system_error>

#include "gtest/gtest.h"

namespace dadi::testing {

ScratchDir::ScratchDir(const std::string& prefix) {
  const char* tmp = std::getenv("TMPDIR");
  std::string templ = std::string(tmp != nullptr ? tmp : "/tmp") + "/" + prefix + "-XXXXXX";
  char* made = ::mkdtemp(templ.data());
  if (made == nullptr) {
    ADD_FAILURE() << "mkdtemp " << templ << " failed";
    return;
  }
  path_ = made;
}

ScratchDir::~ScratchDir() {
  if (path_.empty()) return;
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string ScratchDir::Join(const std::string& name) const { return path_ + "/" + name; }

std::string TestDataPath(const std::string& relative) {
  // Tests run with the repository root as working directory (see dadi_test in CMakeLists).
  return "tests/data/" + relative;
}

}  // namespace dadi::testing
