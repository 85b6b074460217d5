// What a test left in the kernel: mounts and loop devices under its scratch directory. Tests
// check these are empty after teardown, and clean up whatever they find.
#pragma once

#include <set>
#include <string>
#include <vector>

namespace dadi::testing {

// Mount points in this namespace at or below `prefix`, deepest first (the unmount order).
std::vector<std::string> MountsUnder(const std::string& prefix);

// Loop devices (names like "loop3") whose backing file is at or below `prefix`.
std::set<std::string> LoopsUnder(const std::string& prefix);

}  // namespace dadi::testing
