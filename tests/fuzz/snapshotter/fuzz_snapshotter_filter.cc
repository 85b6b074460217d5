// Fuzzes the List filter parser and matcher of dadi-snapshotter. The input is split at '\n'
// into filter strings (several strings = OR); a filter that parses is matched against two
// snapshots, one with labels taken from the input itself.
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "snapshotter/filter.h"

namespace {

using Fields = std::map<std::string, std::string>;

bool MatchFields(const dadi::snapshotter::Filter& f, const Fields& fields) {
  return f.Match([&](const std::vector<std::string>& path) -> std::optional<absl::string_view> {
    auto it = fields.find(absl::StrJoin(path, "."));
    if (it == fields.end()) return std::nullopt;
    return absl::string_view(it->second);
  });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 16384) return 0;  // filters are short; longer inputs only slow the search
  const std::string input(reinterpret_cast<const char*>(data), size);
  const std::vector<std::string> filters = absl::StrSplit(input, '\n');

  auto parsed = dadi::snapshotter::ParseFilters(filters);
  if (!parsed.ok()) {
    // Errors are always INVALID_ARGUMENT: anything else would reach containerd as a server
    // fault.
    if (parsed.status().code() != absl::StatusCode::kInvalidArgument) __builtin_trap();
    return 0;
  }
  const Fields committed = {{"name", "default/3/sha256:abc"},
                            {"parent", "default/2/sha256:def"},
                            {"kind", "committed"},
                            {"labels.containerd.io/snapshot.ref", "sha256:abc"}};
  Fields from_input = {{"name", input}, {"parent", ""}, {"kind", "active"}};
  for (const std::string& f : filters) from_input["labels." + f.substr(0, 64)] = f;
  (void)MatchFields(*parsed, committed);
  (void)MatchFields(*parsed, from_input);
  (void)MatchFields(*parsed, {});
  return 0;
}
