// containerd's filter language: parser and matcher, against the cases of containerd's own
// filter tests (same grammar, same operator semantics).
#include "snapshotter/filter.h"

#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dadi::snapshotter {
namespace {

using Object = std::map<std::string, std::string>;  // field path joined by '.' -> value

bool Matches(const std::vector<std::string>& filters, const Object& obj) {
  auto f = ParseFilters(filters);
  EXPECT_TRUE(f.ok()) << absl::StrJoin(filters, " | ") << ": " << f.status();
  if (!f.ok()) return false;
  return f->Match([&](const std::vector<std::string>& path) -> std::optional<absl::string_view> {
    auto it = obj.find(absl::StrJoin(path, "."));
    if (it == obj.end()) return std::nullopt;
    return absl::string_view(it->second);
  });
}

bool Parses(const std::string& s) { return ParseFilters({s}).ok(); }

const Object kImage = {
    {"name", "docker.io/library/alpine"},
    {"labels.foo", "true"},
    {"labels.bar", "baz"},
    {"labels.more complex label", "so complex"},
    {"labels.containerd.io/snapshot.ref", "sha256:abc"},
    {"empty", ""},
};

TEST(FilterTest, NoFilterOrEmptyMatchesEverything) {
  EXPECT_TRUE(Matches({}, kImage));
  EXPECT_TRUE(Matches({""}, kImage));
  EXPECT_TRUE(Matches({"name==nope", ""}, kImage));
  EXPECT_TRUE(Matches({}, {}));
}

TEST(FilterTest, Equality) {
  EXPECT_TRUE(Matches({"name==docker.io/library/alpine"}, kImage));
  EXPECT_FALSE(Matches({"name==alpine"}, kImage));
  EXPECT_TRUE(Matches({"name==\"docker.io/library/alpine\""}, kImage));
  EXPECT_TRUE(Matches({"labels.bar==baz"}, kImage));
  EXPECT_FALSE(Matches({"labels.missing==\"\""}, kImage));  // == needs presence
  EXPECT_TRUE(Matches({"empty==\"\""}, kImage));
}

TEST(FilterTest, InequalityTreatsAbsentAsEmpty) {
  EXPECT_TRUE(Matches({"labels.bar!=qux"}, kImage));
  EXPECT_FALSE(Matches({"labels.bar!=baz"}, kImage));
  EXPECT_TRUE(Matches({"labels.missing!=x"}, kImage));
  EXPECT_FALSE(Matches({"labels.missing!=\"\""}, kImage));
}

TEST(FilterTest, Presence) {
  EXPECT_TRUE(Matches({"labels.foo"}, kImage));
  EXPECT_TRUE(Matches({"empty"}, kImage));
  EXPECT_FALSE(Matches({"labels.missing"}, kImage));
}

TEST(FilterTest, QuotedFieldsAndValues) {
  EXPECT_TRUE(Matches({"labels.\"more complex label\"==\"so complex\""}, kImage));
  EXPECT_TRUE(Matches({"labels.\"containerd.io/snapshot.ref\"==sha256:abc"}, kImage));
  EXPECT_TRUE(Matches({"labels.\"containerd.io/snapshot.ref\""}, kImage));
  // Unquoted, dots split the path (the adaptor joins it back); '/' would open a quote.
  EXPECT_FALSE(Parses("labels.containerd.io/snapshot.ref"));
  EXPECT_TRUE(Matches({"labels.bar==\"b\\x61z\""}, kImage));  // escapes
  EXPECT_TRUE(Matches({"labels.bar==\"\\u0062az\""}, kImage));
  EXPECT_TRUE(Matches({"labels.bar==|baz|"}, kImage));
  EXPECT_TRUE(Matches({"labels.bar==/baz/"}, kImage));
}

TEST(FilterTest, RegularExpressions) {
  EXPECT_TRUE(Matches({"name~=alpine"}, kImage));  // unanchored search, like Go's MatchString
  EXPECT_TRUE(Matches({"name~=^docker\\.io/"}, kImage));
  EXPECT_FALSE(Matches({"name~=^alpine"}, kImage));
  EXPECT_TRUE(Matches({"name~=/^docker.*alpine$/"}, kImage));
  EXPECT_TRUE(Matches({"labels.bar~=^(baz|qux)$"}, kImage));
  EXPECT_TRUE(Matches({"labels.missing~=^$"}, kImage));  // absent reads as ""
  EXPECT_TRUE(Matches({"labels.\"containerd.io/snapshot.ref\"~=^sha256:[a-f0-9]+$"}, kImage));
}

TEST(FilterTest, RegularExpressionsAreGos) {
  // Syntax of Go's regexp (RE2) that ECMAScript lacks: flags, Unicode classes, named groups,
  // \A and \z.
  EXPECT_TRUE(Matches({"name~=(?i)ALPINE"}, kImage));
  EXPECT_TRUE(Matches({"name~=^\\pL+\\.io"}, kImage));
  EXPECT_TRUE(Matches({"name~=(?P<lib>library)/alpine"}, kImage));
  EXPECT_TRUE(Matches({"name~=\\Adocker.*alpine\\z"}, kImage));
  // "$" is the end of the text, not of a line (no multi-line mode), as in Go.
  EXPECT_FALSE(Matches({"name~=io$"}, kImage));
  // Lookahead is ECMAScript's, not Go's: refused.
  EXPECT_FALSE(Parses("name~=a(?=b)"));
}

TEST(FilterTest, CommaIsAndSeveralStringsAreOr) {
  EXPECT_TRUE(Matches({"labels.foo,labels.bar==baz"}, kImage));
  EXPECT_FALSE(Matches({"labels.foo,labels.bar==qux"}, kImage));
  EXPECT_TRUE(Matches({"labels.bar==qux", "labels.foo"}, kImage));
  EXPECT_FALSE(Matches({"labels.bar==qux", "labels.nope"}, kImage));
}

TEST(FilterTest, Whitespace) {
  EXPECT_TRUE(Matches({"  name == docker.io/library/alpine"}, kImage));
  EXPECT_TRUE(Matches({"labels.foo,  labels.bar==baz"}, kImage));
  // Whitespace ends a value; what follows is an error, as in containerd.
  EXPECT_FALSE(Parses("name==a b"));
  EXPECT_FALSE(Parses("labels.foo ,labels.bar"));
}

TEST(FilterTest, ParseErrorsAreInvalidArgument) {
  for (const std::string& bad : std::vector<std::string>{
           "name==", "==x", "name=x", "name===x", "name==a,", ",name", "name..x", "name.",
           "labels.\"unterminated", "labels.\"bad\\qescape\"", "name==\"a\nb\"", "name~=(",
           "name~=a{2,1}", "name~=(a)\\1", "name~=/x\\d/", std::string("na\0me", 5), "name==\xff",
           "!name", "name==x y"}) {
    auto f = ParseFilters({bad});
    EXPECT_FALSE(f.ok()) << "accepted: " << bad;
    if (!f.ok()) {
      EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    }
  }
  // One bad string spoils the set.
  EXPECT_FALSE(ParseFilters({"name==ok", "=="}).ok());
}

TEST(FilterTest, ParsedForm) {
  auto f = ParseFilters({"labels.\"a.b\"~=x,name", "kind!=view"});
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ(f->any_of().size(), 2u);
  ASSERT_EQ(f->any_of()[0].size(), 2u);
  EXPECT_THAT(f->any_of()[0][0].fieldpath, ::testing::ElementsAre("labels", "a.b"));
  EXPECT_EQ(f->any_of()[0][0].op, Filter::Op::kMatches);
  EXPECT_EQ(f->any_of()[0][0].value, "x");
  EXPECT_EQ(f->any_of()[0][1].op, Filter::Op::kPresent);
  EXPECT_EQ(f->any_of()[1][0].op, Filter::Op::kNotEqual);
  EXPECT_FALSE(f->MatchesEverything());
}

TEST(FilterTest, HostileRegexesAreBounded) {
  EXPECT_FALSE(Parses("name~=" + std::string(kMaxRegexLength + 1, 'a')));
  EXPECT_FALSE(Parses("name~=" + std::string(40, '(') + "a" + std::string(40, ')')));
  // Counted repetition is expanded by the engine: bounded by the expanded size.
  EXPECT_FALSE(Parses("name~=(a{100}){100}"));
  EXPECT_FALSE(Parses("name~=a{6000}"));
  EXPECT_FALSE(Parses("name~=((a|b){40}c){40}"));
  EXPECT_TRUE(Parses("name~=^sha256:[a-f0-9]{64}$"));
  EXPECT_TRUE(Parses("name~=a{1000}"));
  EXPECT_TRUE(Parses("name~=^\\d{4}-\\d{2}-\\d{2}$"));
  // Nested repetition: bounded compile, and matching a long value does not blow the stack.
  auto f = ParseFilters({"name~=^(a+)+$"});
  ASSERT_TRUE(f.ok());
  const std::string value(4000, 'a');
  EXPECT_TRUE(f->Match([&](const std::vector<std::string>&) -> std::optional<absl::string_view> {
    return absl::string_view(value);
  }));
}

}  // namespace
}  // namespace dadi::snapshotter
