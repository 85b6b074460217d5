#include "snapshotter/filter.h"

#include <algorithm>
#include <cstdint>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace dadi::snapshotter {
namespace {

// Rune values below zero are the scanner's markers, as in containerd's scanner.
constexpr int32_t kEof = -1;
constexpr int32_t kIllegal = -2;

// Decodes one UTF-8 sequence at the start of `s` (non-empty). Returns the rune and its width,
// or {kIllegal, 1} for anything Go's utf8.DecodeRuneInString would call RuneError: overlong
// forms, surrogates, values past U+10FFFF, truncated sequences.
std::pair<int32_t, size_t> DecodeRune(absl::string_view s) {
  const auto b0 = static_cast<unsigned char>(s[0]);
  if (b0 < 0x80) return {b0, 1};
  size_t width;
  int32_t rune;
  int32_t min;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    width = 2, rune = b0 & 0x1F, min = 0x80;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    width = 3, rune = b0 & 0x0F, min = 0x800;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    width = 4, rune = b0 & 0x07, min = 0x10000;
  } else {
    return {kIllegal, 1};
  }
  if (s.size() < width) return {kIllegal, 1};
  for (size_t i = 1; i < width; ++i) {
    const auto b = static_cast<unsigned char>(s[i]);
    if ((b & 0xC0) != 0x80) return {kIllegal, 1};
    rune = (rune << 6) | (b & 0x3F);
  }
  if (rune < min || rune > 0x10FFFF || (rune >= 0xD800 && rune <= 0xDFFF)) return {kIllegal, 1};
  return {rune, width};
}

void AppendRune(std::string* out, int32_t r) {
  if (r < 0 || r > 0x10FFFF || (r >= 0xD800 && r <= 0xDFFF)) r = 0xFFFD;  // as Go's EncodeRune
  if (r < 0x80) {
    out->push_back(static_cast<char>(r));
  } else if (r < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (r >> 6)));
    out->push_back(static_cast<char>(0x80 | (r & 0x3F)));
  } else if (r < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (r >> 12)));
    out->push_back(static_cast<char>(0x80 | ((r >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (r & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (r >> 18)));
    out->push_back(static_cast<char>(0x80 | ((r >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((r >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (r & 0x3F)));
  }
}

// Go's unicode.IsSpace.
bool IsSpace(int32_t r) {
  switch (r) {
    case '\t':
    case '\n':
    case '\v':
    case '\f':
    case '\r':
    case ' ':
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
      return true;
    default:
      return r >= 0x2000 && r <= 0x200A;
  }
}

bool IsFieldRune(int32_t r) {
  return r == '-' || r == '_' || (r >= 'A' && r <= 'Z') || (r >= 'a' && r <= 'z') ||
         (r >= '0' && r <= '9');
}

bool IsOperatorRune(int32_t r) { return r == '=' || r == '!' || r == '~'; }
bool IsQuoteRune(int32_t r) { return r == '/' || r == '|' || r == '"'; }
bool IsSeparatorRune(int32_t r) { return r == ',' || r == '.'; }

// Go's "letter, digit, graphic or punctuation, not space nor comma". Outside ASCII this
// approximates Unicode's graphic classes by excluding the control and format characters.
bool IsValueRune(int32_t r) {
  if (r < 0 || r == ',' || IsSpace(r)) return false;
  if (r < 0x80) return r >= 0x21 && r <= 0x7E;
  if (r <= 0x9F) return false;  // C1 controls
  if (r == 0xAD || (r >= 0x200B && r <= 0x200F) || (r >= 0x202A && r <= 0x202E) ||
      (r >= 0x2060 && r <= 0x206F) || r == 0xFEFF || (r >= 0xE000 && r <= 0xF8FF)) {
    return false;  // format characters, private use
  }
  return true;
}

enum class Tok { kEof, kIllegal, kQuoted, kValue, kField, kSeparator, kOperator, kOther };

struct Token {
  Tok tok;
  size_t pos;  // byte offset of the token in the input
  absl::string_view text;
};

// The tokenizer of containerd's filters/scanner.go: whitespace is skipped before a token,
// never inside one; after an operator comes a value, which may hold '.' and punctuation.
class Scanner {
 public:
  explicit Scanner(absl::string_view input) : input_(input) {}

  int32_t Next() {
    pos_ = ppos_;
    if (ppos_ >= input_.size()) return kEof;
    auto [r, w] = DecodeRune(input_.substr(ppos_));
    ppos_ += w;
    if (r == kIllegal) {
      Error("invalid UTF-8");
      return kIllegal;
    }
    if (r == 0) {
      Error("unexpected NUL");
      return kIllegal;
    }
    return r;
  }

  int32_t Peek() {
    const size_t pos = pos_, ppos = ppos_;
    const int32_t r = Next();
    pos_ = pos, ppos_ = ppos;
    return r;
  }

  Token Scan() {
    int32_t ch = Next();
    while (ch >= 0 && IsSpace(ch)) ch = Next();
    const size_t pos = pos_;
    if (ch == kEof) return {Tok::kEof, pos, {}};
    if (ch == kIllegal) return {Tok::kIllegal, pos, {}};
    if (IsQuoteRune(ch)) {
      const bool ok = ScanQuoted(ch);
      return {ok ? Tok::kQuoted : Tok::kIllegal, pos, input_.substr(pos, ppos_ - pos)};
    }
    if (IsSeparatorRune(ch)) {
      value_ = false;
      return {Tok::kSeparator, pos, input_.substr(pos, ppos_ - pos)};
    }
    if (IsOperatorRune(ch)) {
      while (IsOperatorRune(Peek())) Next();
      value_ = true;
      return {Tok::kOperator, pos, input_.substr(pos, ppos_ - pos)};
    }
    if (value_) {
      while (IsValueRune(Peek())) Next();
      value_ = false;
      return {Tok::kValue, pos, input_.substr(pos, ppos_ - pos)};
    }
    if (IsFieldRune(ch)) {
      while (IsFieldRune(Peek())) Next();
      return {Tok::kField, pos, input_.substr(pos, ppos_ - pos)};
    }
    return {Tok::kOther, pos, input_.substr(pos, ppos_ - pos)};
  }

  size_t ppos() const { return ppos_; }
  const std::string& error() const { return error_; }

 private:
  // Finds the closing quote; escapes are only skipped here and checked by Unquote.
  bool ScanQuoted(int32_t quote) {
    int32_t ch = Next();
    while (ch != quote) {
      if (ch == '\n' || ch < 0) {
        Error("quoted literal not terminated");
        return false;
      }
      if (ch == '\\') {
        ch = Next();
        if (ch < 0) continue;  // reported by the loop condition
      }
      ch = Next();
    }
    return true;
  }

  void Error(const char* msg) {
    if (error_.empty()) error_ = msg;
  }

  absl::string_view input_;
  size_t pos_ = 0;   // start of the last rune read
  size_t ppos_ = 0;  // end of the last rune read
  bool value_ = false;
  std::string error_;
};

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Go's strconv.Unquote as containerd extends it: '/' and '|' delimit like '"'.
std::optional<std::string> Unquote(absl::string_view quoted) {
  if (quoted.size() < 2 || quoted.front() != quoted.back()) return std::nullopt;
  const char quote = quoted.front();
  if (quote != '"' && quote != '/' && quote != '|') return std::nullopt;
  absl::string_view s = quoted.substr(1, quoted.size() - 2);
  if (s.find('\n') != absl::string_view::npos) return std::nullopt;
  if (s.find('\\') == absl::string_view::npos && s.find(quote) == absl::string_view::npos) {
    return std::string(s);
  }
  std::string out;
  out.reserve(s.size());
  while (!s.empty()) {
    const char c = s[0];
    if (c == quote) return std::nullopt;
    if (c != '\\') {
      out.push_back(c);
      s.remove_prefix(1);
      continue;
    }
    if (s.size() < 2) return std::nullopt;
    const char e = s[1];
    s.remove_prefix(2);
    switch (e) {
      case 'a':
        out.push_back('\a');
        break;
      case 'b':
        out.push_back('\b');
        break;
      case 'f':
        out.push_back('\f');
        break;
      case 'n':
        out.push_back('\n');
        break;
      case 'r':
        out.push_back('\r');
        break;
      case 't':
        out.push_back('\t');
        break;
      case 'v':
        out.push_back('\v');
        break;
      case '\\':
        out.push_back('\\');
        break;
      case 'x':
      case 'u':
      case 'U': {
        const size_t n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
        if (s.size() < n) return std::nullopt;
        int64_t v = 0;
        for (size_t i = 0; i < n; ++i) {
          const int h = HexValue(s[i]);
          if (h < 0) return std::nullopt;
          v = (v << 4) | h;
        }
        s.remove_prefix(n);
        if (e == 'x') {
          out.push_back(static_cast<char>(v));  // a single byte, possibly not UTF-8
        } else {
          if (v > 0x10FFFF) return std::nullopt;
          AppendRune(&out, static_cast<int32_t>(v));
        }
        break;
      }
      case '0':
      case '1':
      case '2':
      case '3':
      case '4':
      case '5':
      case '6':
      case '7': {
        if (s.size() < 2) return std::nullopt;
        int v = e - '0';
        for (size_t i = 0; i < 2; ++i) {
          if (s[i] < '0' || s[i] > '7') return std::nullopt;
          v = (v << 3) | (s[i] - '0');
        }
        s.remove_prefix(2);
        if (v > 255) return std::nullopt;
        out.push_back(static_cast<char>(v));
        break;
      }
      case '"':
      case '/':
      case '|':
        if (e != quote) return std::nullopt;
        out.push_back(e);
        break;
      default:
        return std::nullopt;
    }
  }
  return out;
}

// Deepest parenthesis nesting, counting conservatively (escapes skipped, classes not parsed).
int RegexNesting(absl::string_view re) {
  int depth = 0, max_depth = 0;
  for (size_t i = 0; i < re.size(); ++i) {
    if (re[i] == '\\') {
      ++i;
    } else if (re[i] == '(') {
      max_depth = std::max(max_depth, ++depth);
    } else if (re[i] == ')' && depth > 0) {
      --depth;
    }
  }
  return max_depth;
}

// A rough count of the automaton states a pattern compiles to: counted repetition copies
// what it repeats, so "(a{100}){100}" is 10000 states although it is 12 bytes. Errs high.
int64_t RegexSizeEstimate(absl::string_view re) {
  struct Frame {
    int64_t size = 0;  // states of the group so far
    int64_t last = 0;  // states of the last atom or group, which a quantifier repeats
  };
  std::vector<Frame> stack(1);
  constexpr int64_t kCap = int64_t{1} << 40;  // saturate: only "too big" matters
  for (size_t i = 0; i < re.size(); ++i) {
    Frame& top = stack.back();
    const char c = re[i];
    if (c == '(') {
      stack.emplace_back();
    } else if (c == ')' && stack.size() > 1) {
      const int64_t group = stack.back().size + 2;
      stack.pop_back();
      stack.back().size = std::min(kCap, stack.back().size + group);
      stack.back().last = group;
    } else if (c == '{') {
      // {m}, {m,} or {m,n}: the last atom appears max(m, n) times.
      size_t j = i + 1;
      int64_t m = 0, n = -1, cur = 0;
      bool comma = false, digits = false;
      for (; j < re.size() && re[j] != '}'; ++j) {
        if (re[j] >= '0' && re[j] <= '9') {
          cur = std::min<int64_t>(cur * 10 + (re[j] - '0'), kCap);
          digits = true;
        } else if (re[j] == ',' && !comma) {
          m = cur, cur = 0, comma = true, digits = false;
        } else {
          break;
        }
      }
      if (j < re.size() && re[j] == '}') {
        if (comma) {
          n = digits ? cur : -1;
        } else {
          m = cur;
        }
        const int64_t times = std::max<int64_t>(std::max(m, n), 1);
        const int64_t grown = std::min(kCap, top.last * times);
        top.size = std::min(kCap, top.size + grown - top.last + 1);
        top.last = grown;
        i = j;
      } else {
        top.size += 1, top.last = 1;
      }
    } else if (c == '[') {
      // A class is one state; skip to its closing bracket.
      size_t j = i + 1;
      if (j < re.size() && re[j] == '^') ++j;
      if (j < re.size() && re[j] == ']') ++j;
      while (j < re.size() && re[j] != ']') j += re[j] == '\\' ? 2 : 1;
      i = j;
      top.size += 1, top.last = 1;
    } else {
      if (c == '\\') ++i;
      top.size += 1, top.last = 1;
    }
  }
  int64_t total = 0;
  for (const Frame& f : stack) total = std::min(kCap, total + f.size);
  return total;
}

class Parser {
 public:
  explicit Parser(absl::string_view input) : input_(input), scanner_(input) {}

  absl::StatusOr<std::vector<Filter::Selector>> Selectors() {
    std::vector<Filter::Selector> out;
    auto first = Selector();
    if (!first.ok()) return first.status();
    out.push_back(*std::move(first));
    while (true) {
      const int32_t next = scanner_.Peek();
      if (next == kEof) break;
      if (next != ',') return Error(scanner_.ppos(), "unexpected input");
      const Token sep = scanner_.Scan();
      if (sep.tok != Tok::kSeparator) return Error(sep.pos, "expected a separator");
      auto s = Selector();
      if (!s.ok()) return s.status();
      out.push_back(*std::move(s));
    }
    return out;
  }

 private:
  absl::StatusOr<Filter::Selector> Selector() {
    Filter::Selector sel;
    auto field = Field();
    if (!field.ok()) return field.status();
    sel.fieldpath.push_back(*std::move(field));
    while (scanner_.Peek() == '.') {
      const Token sep = scanner_.Scan();
      if (sep.tok != Tok::kSeparator) return Error(sep.pos, "expected a field separator (`.`)");
      field = Field();
      if (!field.ok()) return field.status();
      sel.fieldpath.push_back(*std::move(field));
    }

    const int32_t next = scanner_.Peek();
    if (next == ',' || next == kEof) {
      sel.op = Filter::Op::kPresent;
      return sel;
    }

    const Token op = scanner_.Scan();
    if (op.tok != Tok::kOperator) return Error(op.pos, "expected an operator (==, != or ~=)");
    if (op.text == "==") {
      sel.op = Filter::Op::kEqual;
    } else if (op.text == "!=") {
      sel.op = Filter::Op::kNotEqual;
    } else if (op.text == "~=") {
      sel.op = Filter::Op::kMatches;
    } else {
      return Error(op.pos, absl::StrCat("unsupported operator \"", op.text, "\""));
    }

    const Token value = scanner_.Scan();
    switch (value.tok) {
      case Tok::kValue:
      case Tok::kField:
        sel.value = std::string(value.text);
        break;
      case Tok::kQuoted: {
        auto unquoted = Unquote(value.text);
        if (!unquoted) return Error(value.pos, "unquoting failed");
        sel.value = *std::move(unquoted);
        break;
      }
      default:
        return Error(value.pos, "expected value or quoted");
    }

    if (sel.op == Filter::Op::kMatches) {
      if (sel.value.size() > kMaxRegexLength) {
        return Error(value.pos,
                     absl::StrCat("regular expression longer than ", kMaxRegexLength, " bytes"));
      }
      if (RegexSizeEstimate(sel.value) > kMaxRegexStates) {
        return Error(value.pos, "regular expression too large once repetitions are expanded");
      }
      if (RegexNesting(sel.value) > kMaxRegexNesting) {
        return Error(value.pos,
                     absl::StrCat("regular expression nested deeper than ", kMaxRegexNesting));
      }
      RE2::Options options;
      options.set_log_errors(false);  // the error goes back to the client instead
      auto re = std::make_shared<const RE2>(re2::StringPiece(sel.value.data(), sel.value.size()),
                                            options);
      if (!re->ok()) {
        return Error(value.pos, absl::StrCat("bad regular expression: ", re->error()));
      }
      sel.re = std::move(re);
    }
    return sel;
  }

  absl::StatusOr<std::string> Field() {
    const Token t = scanner_.Scan();
    if (t.tok == Tok::kField) return std::string(t.text);
    if (t.tok == Tok::kQuoted) {
      auto unquoted = Unquote(t.text);
      if (!unquoted) return Error(t.pos, "unquoting failed");
      return *std::move(unquoted);
    }
    return Error(t.pos, "expected field or quoted");
  }

  absl::Status Error(size_t pos, absl::string_view msg) const {
    std::string detail(msg);
    if (!scanner_.error().empty()) absl::StrAppend(&detail, " (", scanner_.error(), ")");
    return absl::InvalidArgumentError(
        absl::StrCat("filter \"", input_, "\": parse error at byte ", pos, ": ", detail));
  }

  absl::string_view input_;
  Scanner scanner_;
};

bool MatchSelector(const Filter::Selector& sel, FieldAdaptor field) {
  const std::optional<absl::string_view> value = field(sel.fieldpath);
  switch (sel.op) {
    case Filter::Op::kPresent:
      return value.has_value();
    case Filter::Op::kEqual:
      return value.has_value() && *value == sel.value;
    case Filter::Op::kNotEqual:
      return value.value_or("") != sel.value;
    case Filter::Op::kMatches: {
      if (sel.re == nullptr) return false;
      const absl::string_view v = value.value_or("");
      // Unanchored, as Go's MatchString. RE2 runs in time linear in the input.
      return RE2::PartialMatch(re2::StringPiece(v.data(), v.size()), *sel.re);
    }
  }
  return false;
}

}  // namespace

bool Filter::Match(FieldAdaptor field) const {
  if (always_) return true;
  for (const auto& all_of : any_of_) {
    bool all = true;
    for (const auto& sel : all_of) {
      if (!MatchSelector(sel, field)) {
        all = false;
        break;
      }
    }
    if (all) return true;
  }
  return false;
}

absl::StatusOr<Filter> ParseFilters(const std::vector<std::string>& inputs) {
  Filter filter;
  bool always = inputs.empty();
  for (const std::string& input : inputs) {
    if (input.empty()) {
      always = true;  // "" matches everything, and so does any disjunction holding it
      continue;
    }
    Parser parser(input);
    auto selectors = parser.Selectors();
    if (!selectors.ok()) return selectors.status();
    filter.any_of_.push_back(*std::move(selectors));
  }
  filter.always_ = always;
  return filter;
}

}  // namespace dadi::snapshotter
