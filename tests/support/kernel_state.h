// What a test left in the kernel: mounts and loop devices under its scratch directory. Tests
// check these are empty after teardown, and clean up whatever they find.
#pragma once

#include <chrono>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace dadi::testing {

// Mount points in this namespace at or below `prefix`, deepest first (the unmount order).
std::vector<std::string> MountsUnder(const std::string& prefix);

// Loop devices (names like "loop3") whose backing file is at or below `prefix`.
std::set<std::string> LoopsUnder(const std::string& prefix);

// Polls `done` for up to 10 s and returns its last value: the kernel releases loop devices
// asynchronously to the unmount or detach that lets go of them. Not a timing assertion, only
// a bound on a hang.
template <typename F>
bool Eventually(F done) {
  for (int i = 0; i < 1000; ++i) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return done();
}

}  // namespace dadi::testing
