// A private temporary directory for one test, removed with everything below it on destruction.
#pragma once

#include <string>

namespace dadi::testing {

class ScratchDir {
 public:
  // Creates a fresh directory under $TMPDIR (or /tmp) named after `prefix`.
  explicit ScratchDir(const std::string& prefix = "dadi-test");
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const std::string& path() const { return path_; }
  // path() + "/" + name.
  std::string Join(const std::string& name) const;

 private:
  std::string path_;
};

// Path of a file under the repository's test data (tests/data/...).
std::string TestDataPath(const std::string& relative);

}  // namespace dadi::testing
