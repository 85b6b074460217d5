#include "tests/support/kernel_state.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <system_error>

#include "absl/strings/match.h"

namespace dadi::testing {

std::vector<std::string> MountsUnder(const std::string& prefix) {
  std::vector<std::string> out;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, dev, root, mount_point;
    if (!(fields >> id >> parent >> dev >> root >> mount_point)) continue;
    if (absl::StartsWith(mount_point, prefix)) out.push_back(mount_point);
  }
  std::sort(out.rbegin(), out.rend());
  return out;
}

std::set<std::string> LoopsUnder(const std::string& prefix) {
  std::set<std::string> out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/sys/block", ec)) {
    std::string name = entry.path().filename();
    if (!absl::StartsWith(name, "loop")) continue;
    std::ifstream in(entry.path() / "loop" / "backing_file");
    std::string backing((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (absl::StartsWith(backing, prefix)) out.insert(name);
  }
  return out;
}

}  // namespace dadi::testing
