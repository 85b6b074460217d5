// containerd's filter language (github.com/containerd/containerd/filters), used by List.
//
//   filters   := one or more filter strings; an object matches if it matches any of them
//   selectors := selector ("," selector)*          all selectors of a string must match
//   selector  := fieldpath [operator value]        without operator: the field is present
//   fieldpath := field ("." field)*
//   field     := quoted | [A-Za-z0-9_-]+
//   operator  := "==" | "!=" | "~="               "~=": regular expression, unanchored search
//   value     := quoted | [^\s,]+
//   quoted    := a Go string literal delimited by '"', '/' or '|'
//
// Example: labels."containerd.io/snapshot.ref"~=^sha256:,kind==committed
//
// Operators as in containerd: "==" needs the field present and equal; "!=" and "~=" compare
// the field's value, "" when absent. Regular expressions are RE2's, the syntax and semantics
// of Go's regexp that containerd uses (unanchored search, no back-references, linear time).
//
// This file depends only on the standard library, Abseil and RE2: the parser reads outside
// bytes and is fuzzed (tests/fuzz/snapshotter).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "re2/re2.h"

namespace dadi::snapshotter {

// Maps a field path to the field's value, or nullopt if the object has no such field.
using FieldAdaptor =
    absl::FunctionRef<std::optional<absl::string_view>(const std::vector<std::string>& path)>;

class Filter {
 public:
  enum class Op { kPresent, kEqual, kNotEqual, kMatches };
  struct Selector {
    std::vector<std::string> fieldpath;
    Op op = Op::kPresent;
    std::string value;
    std::shared_ptr<const RE2> re;  // for kMatches
  };

  // The filter that matches everything.
  Filter() = default;

  bool Match(FieldAdaptor field) const;
  bool MatchesEverything() const { return always_; }

  // Parsed form, for tests: any_of[i] is the conjunction of filter string i.
  const std::vector<std::vector<Selector>>& any_of() const { return any_of_; }

 private:
  friend absl::StatusOr<Filter> ParseFilters(const std::vector<std::string>& inputs);
  bool always_ = true;
  std::vector<std::vector<Selector>> any_of_;
};

// Parses filter strings; none, or an empty string among them, matches everything. Errors are
// INVALID_ARGUMENT and name the position in the string.
absl::StatusOr<Filter> ParseFilters(const std::vector<std::string>& inputs);

// Limits that keep a hostile filter from exhausting the stack or memory of the regex engine.
inline constexpr size_t kMaxRegexLength = 1024;
inline constexpr int kMaxRegexNesting = 32;
// States after expanding counted repetition ("(a{100}){100}" has 10000): bounds the time of
// one match to (value length × states).
inline constexpr int64_t kMaxRegexStates = 5000;

}  // namespace dadi::snapshotter
